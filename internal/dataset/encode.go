package dataset

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// Tokenizer is what the dataset needs from a model; *llama.Model satisfies it. Encode calls
// it from several goroutines at once.
type Tokenizer interface {
	Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error)
}

// eosTokenizer is met by tokenizers that know their end-of-sequence token (*llama.Model
// does); templates that end a response with EOS (empty, alpaca) need it.
type eosTokenizer interface{ EOS() int32 }

// Sample is one encoded training example. Labels are shifted: Labels[i] is the token to
// predict at position i, Tokens[i+1], where that token is learned, else -1 (the last
// position is always -1).
type Sample struct {
	Tokens []int32
	Labels []int32
	Source string // the conversation's "file:record"
}

// Options for Encode. Zero values mean: no cutoff, prompts not learned, every sample, no
// validation set, seed 0.
type Options struct {
	CutoffLen     int     // at most this many tokens per sample (LLaMA-Factory cutoff_len); <= 0 no limit
	TrainOnPrompt bool    // learn every token, not only the responses
	MaxSamples    int     // at most this many conversations per dataset, taken from its start; <= 0 all
	ValSize       float64 // validation share: < 1 a fraction, >= 1 a count
	Seed          uint64  // shuffle seed
}

// Stats counts what Encode did.
type Stats struct {
	Conversations int // after MaxSamples
	Truncated     int // samples cut to CutoffLen
	Dropped       int // samples with nothing left to learn
	Train, Val    int
	Tokens        int // total over train and val
	Supervised    int // learned positions over train and val
}

// Encode tokenizes conversations with a template, masks the prompts, applies cutoff and
// max samples, shuffles deterministically by Seed and splits off a validation set. Samples
// with nothing to learn are dropped and logged.
func Encode(tok Tokenizer, t *Template, convs []Conversation, o Options) (train, val []Sample, err error) {
	train, val, st, err := EncodeWithStats(tok, t, convs, o)
	if err != nil {
		return nil, nil, err
	}
	if st.Dropped > 0 {
		slog.Warn("dropped samples with no response tokens left (empty response, or cut away by cutoff_len)", "dropped", st.Dropped, "kept", st.Train+st.Val)
	}
	if st.Truncated > 0 {
		slog.Info("samples cut to cutoff_len", "truncated", st.Truncated, "cutoff_len", o.CutoffLen)
	}
	return train, val, nil
}

// EncodeWithStats is Encode that also reports counts instead of logging them.
func EncodeWithStats(tok Tokenizer, t *Template, convs []Conversation, o Options) (train, val []Sample, st Stats, err error) {
	if tok == nil || t == nil {
		return nil, nil, st, errors.New("dataset.Encode: tokenizer and template are required")
	}
	if o.ValSize < 0 || math.IsNaN(o.ValSize) || math.IsInf(o.ValSize, 0) || (o.ValSize >= 1 && o.ValSize != math.Trunc(o.ValSize)) {
		return nil, nil, st, fmt.Errorf("val_size %v: use a fraction below 1 or a whole number of samples", o.ValSize)
	}
	convs = limitPerDataset(convs, o.MaxSamples)
	st.Conversations = len(convs)
	if len(convs) == 0 {
		return nil, nil, st, errors.New("no conversations to encode")
	}
	results, err := encodeParallel(tok, t, convs, o)
	if err != nil {
		return nil, nil, st, err
	}
	all := make([]Sample, 0, len(convs))
	for _, r := range results {
		if r.truncated {
			st.Truncated++
		}
		if r.sample == nil {
			st.Dropped++
			continue
		}
		st.Tokens += len(r.sample.Tokens)
		for _, l := range r.sample.Labels {
			if l >= 0 {
				st.Supervised++
			}
		}
		all = append(all, *r.sample)
	}
	if len(all) == 0 {
		return nil, nil, st, fmt.Errorf("nothing to learn in any of %d samples (empty responses, or responses cut away by cutoff_len %d)", st.Dropped, o.CutoffLen)
	}
	nVal := 0
	switch {
	case o.ValSize >= 1:
		nVal = int(o.ValSize)
	case o.ValSize > 0:
		nVal = int(math.Ceil(o.ValSize * float64(len(all)))) // as Hugging Face's train_test_split
	}
	if nVal >= len(all) {
		return nil, nil, st, fmt.Errorf("val_size %v leaves no training samples out of %d", o.ValSize, len(all))
	}
	NewRand(o.Seed).Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	val, train = all[:nVal:nVal], all[nVal:]
	st.Train, st.Val = len(train), len(val)
	if nVal == 0 {
		val = nil
	}
	return train, val, st, nil
}

type encoded struct {
	sample    *Sample
	truncated bool
	err       error
}

// encodeParallel encodes on several threads (tokenizing long conversations is most of the
// time, and llama.cpp's tokenizer is safe for concurrent use); results keep their order and
// the first error in data order is reported, so the outcome does not depend on scheduling.
func encodeParallel(tok Tokenizer, t *Template, convs []Conversation, o Options) ([]encoded, error) {
	out := make([]encoded, len(convs))
	workers := min(runtime.GOMAXPROCS(0), 8, len(convs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := newEncoder(tok, t)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(convs) {
					return
				}
				r := &out[i]
				r.sample, r.truncated, r.err = e.encode(convs[i], o)
			}
		}()
	}
	wg.Wait()
	for _, r := range out {
		if r.err != nil {
			return nil, r.err
		}
	}
	return out, nil
}

// limitPerDataset keeps the first max conversations of each dataset, as LLaMA-Factory's
// max_samples does before datasets are merged.
func limitPerDataset(convs []Conversation, max int) []Conversation {
	if max <= 0 {
		return convs
	}
	seen := map[string]int{}
	out := make([]Conversation, 0, len(convs))
	for _, c := range convs {
		if seen[c.Dataset] < max {
			seen[c.Dataset]++
			out = append(out, c)
		}
	}
	return out
}

type encoder struct {
	tok   Tokenizer
	t     *Template
	eos   int32
	cache map[string][]int32 // template text is short and repeats: tokenize it once
}

func newEncoder(tok Tokenizer, t *Template) *encoder {
	e := &encoder{tok: tok, t: t, eos: -1, cache: map[string][]int32{}}
	if et, ok := tok.(eosTokenizer); ok {
		e.eos = et.EOS()
	}
	return e
}

// tokenizeSegment tokenizes one segment. The first segment of a sample is tokenized with the
// tokenizer's special tokens added, so BOS appears exactly where the model expects it.
func (e *encoder) tokenizeSegment(s segment, first bool) ([]int32, error) {
	if s.EOS {
		if e.eos < 0 {
			return nil, fmt.Errorf("template %s ends responses with the tokenizer's EOS token, and this tokenizer has none", e.t.Name)
		}
		return []int32{e.eos}, nil
	}
	if first {
		return e.tok.Tokenize(s.Text, true, s.Special)
	}
	if s.Text == "" {
		return nil, nil
	}
	if s.Special {
		if ids, ok := e.cache[s.Text]; ok {
			return ids, nil
		}
	}
	ids, err := e.tok.Tokenize(s.Text, false, s.Special)
	if err == nil && s.Special {
		e.cache[s.Text] = ids
	}
	return ids, err
}

// encode turns one conversation into a sample; nil when nothing is left to learn.
func (e *encoder) encode(c Conversation, o Options) (s *Sample, truncated bool, err error) {
	turns, err := e.t.turns(c)
	if err != nil {
		return nil, false, err
	}
	var tokens []int32
	var learn []bool
	first := true
	for _, tr := range turns {
		src, opener, err := e.tokens(tr.source, &first)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", c.Source, err)
		}
		tgt, _, err := e.tokens(tr.target, &first)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", c.Source, err)
		}
		if o.CutoffLen > 0 {
			budget := o.CutoffLen - len(tokens)
			if budget <= 0 {
				truncated = true
				break
			}
			ns, nt := splitBudget(len(src), len(tgt), budget)
			if ns < len(src) || nt < len(tgt) {
				truncated = true
				src = cutSource(src, opener, ns)
				tgt = tgt[:nt]
			}
		}
		tokens = append(tokens, src...)
		for range src {
			learn = append(learn, o.TrainOnPrompt)
		}
		tokens = append(tokens, tgt...)
		for range tgt {
			learn = append(learn, true)
		}
	}
	// Tokens after the last learned one only cost compute.
	end := len(tokens)
	for end > 0 && !learn[end-1] {
		end--
	}
	tokens, learn = tokens[:end], learn[:end]
	labels := make([]int32, len(tokens))
	learned := false
	for i := range labels {
		labels[i] = -1
		if i+1 < len(tokens) && learn[i+1] {
			labels[i] = tokens[i+1]
			learned = true
		}
	}
	if !learned {
		return nil, truncated, nil
	}
	return &Sample{Tokens: tokens, Labels: labels, Source: c.Source}, truncated, nil
}

// tokens tokenizes segments; opener is the token count of the last segment (for a
// source: the generation prompt).
func (e *encoder) tokens(segs []segment, first *bool) (ids []int32, opener int, err error) {
	for _, s := range segs {
		t, err := e.tokenizeSegment(s, *first)
		if err != nil {
			return nil, 0, err
		}
		*first = false
		ids = append(ids, t...)
		opener = len(t)
	}
	return ids, opener, nil
}

// splitBudget shares a token budget between a turn's prompt and response the way
// LLaMA-Factory does: a short response is kept whole, else a short prompt is kept whole,
// else both shrink in proportion to their lengths.
func splitBudget(src, tgt, budget int) (newSrc, newTgt int) {
	var maxTgt int
	switch {
	case tgt*2 < budget:
		maxTgt = budget
	case src*2 < budget:
		maxTgt = budget - src
	default:
		maxTgt = int(float64(budget) * float64(tgt) / float64(src+tgt))
	}
	newTgt = min(maxTgt, tgt)
	newSrc = min(max(budget-newTgt, 0), src)
	return newSrc, newTgt
}

// cutSource shortens a prompt to n tokens. LLaMA-Factory keeps its head; we keep the head
// too but also the generation prompt at its end (when it fits), so the kept response
// still follows the header it will follow at inference time.
func cutSource(src []int32, opener, n int) []int32 {
	if n >= len(src) {
		return src
	}
	if opener == 0 || opener > n {
		return src[:n]
	}
	out := append([]int32(nil), src[:n-opener]...)
	return append(out, src[len(src)-opener:]...)
}
