package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/magicconch/conch/llama"
)

// job is a submitted request on its way through the engine.
type job struct {
	req       Request
	ctx       context.Context
	out       *Stream
	submitted time.Time
}

// slot is one llama.cpp sequence. After a request ends its tokens stay in the KV cache,
// so the next request with the same prefix (a chat's next turn) skips that part of the
// prefill.
type slot struct {
	id  int
	job *job // nil: free

	cache        []llama.Token // tokens in the KV cache for this sequence, in order
	cacheAdapter string        // adapter the cache was computed with

	prefilled  int // prompt tokens in the cache for the current job
	chunk      int // prompt tokens in the current batch
	chunkIdx   int // batch index of the chunk's first token (logits for all: PromptLogprobs)
	generating bool
	next       llama.Token // sampled, not yet decoded
	batchIdx   int         // index of this slot's logits in the current batch, -1 none
	smp        *llama.Sampler
	greedy     bool // argmax of the logits, no sampler chain needed
	text       *llama.TextStream
	res        Result
	lastToken  time.Time
	lastUsed   time.Time // when the slot's last request ended
}

func (s *slot) prompt() []llama.Token { return s.job.req.Prompt }

// run is the engine goroutine: admit, step, repeat; sleep when there is nothing to do.
func (e *Engine) run() {
	defer close(e.done)
	for {
		select {
		case <-e.quit:
			e.abortAll(ErrClosed)
			return
		default:
		}
		e.reap()
		e.admit()
		if e.busy.Load() == 0 {
			select {
			case <-e.wake:
			case <-e.quit:
			}
			continue
		}
		e.step()
	}
}

// reap ends jobs whose caller has gone, running or waiting.
func (e *Engine) reap() {
	for _, s := range e.slots {
		if s.job != nil && s.job.ctx.Err() != nil {
			e.finish(s, "", s.job.ctx.Err())
		}
	}
	e.mu.Lock()
	kept := e.queue[:0]
	var gone []*job
	for _, j := range e.queue {
		if j.ctx.Err() != nil {
			gone = append(gone, j)
		} else {
			kept = append(kept, j)
		}
	}
	clear(e.queue[len(kept):])
	e.queue = kept
	e.mu.Unlock()
	for _, j := range gone {
		j.out.end(Result{PromptTokens: len(j.req.Prompt), QueueTime: time.Since(j.submitted)}, j.ctx.Err())
	}
}

// admit moves waiting jobs into free slots, oldest job first, each into the free slot
// whose cache shares the longest prefix with its prompt.
func (e *Engine) admit() {
	for {
		e.mu.Lock()
		if len(e.queue) == 0 || int(e.busy.Load()) == len(e.slots) {
			e.mu.Unlock()
			return
		}
		j := e.queue[0]
		e.queue[0] = nil
		e.queue = e.queue[1:]
		e.busy.Add(1)
		e.mu.Unlock()
		e.start(e.pickSlot(j), j)
	}
}

// pickSlot chooses a free slot for j: one whose cache the prompt continues (a chat's next
// turn; the longest such), else the least recently used, so that recent conversations
// keep their caches.
func (e *Engine) pickSlot(j *job) *slot {
	var cont, lru *slot
	contN := -1
	for _, s := range e.slots {
		if s.job != nil {
			continue
		}
		if n := e.reusable(s, j); n == len(s.cache) && n > contN {
			cont, contN = s, n
		}
		if lru == nil || s.lastUsed.Before(lru.lastUsed) {
			lru = s
		}
	}
	if cont != nil {
		return cont
	}
	return lru
}

// reusable is how many tokens of s's cache begin j's prompt.
func (e *Engine) reusable(s *slot, j *job) int {
	if s.cacheAdapter != j.req.Adapter {
		return 0
	}
	return llama.CommonPrefix(s.cache, j.req.Prompt)
}

// start puts j into the free slot s.
func (e *Engine) start(s *slot, j *job) {
	smp, err := llama.NewSampler(j.req.Sampler)
	if err != nil { // validated in Submit; kept for safety
		e.busy.Add(-1)
		j.out.end(Result{}, err)
		return
	}
	prompt := j.req.Prompt
	// The longest prefix of the prompt any slot holds (running ones too: a shared system
	// prompt) is shared into this slot's sequence rather than computed again; a prompt
	// to be scored is read whole.
	own := e.reusable(s, j)
	donor, best := s, own
	for _, o := range e.slots {
		if n := e.reusable(o, j); n > best {
			donor, best = o, n
		}
	}
	if j.req.PromptLogprobs {
		own = 0
	} else if donor != s {
		e.lctx.RemoveSeq(s.id, 0, -1)
		e.lctx.CopySeq(donor.id, s.id, 0, best)
		s.cache = append(s.cache[:0], donor.cache[:best]...)
		own = best
	}
	// Always decode at least the prompt's last token: its logits give the first answer token.
	keep := min(own, len(prompt)-1)
	if keep < len(s.cache) && !e.lctx.RemoveSeq(s.id, keep, -1) {
		// llama.cpp could not cut the sequence: start from nothing.
		e.lctx.RemoveSeq(s.id, 0, -1)
		keep = 0
	}
	s.cache = s.cache[:keep]
	s.cacheAdapter = j.req.Adapter
	for _, t := range prompt {
		smp.Accept(t)
	}
	s.job, s.smp, s.greedy = j, smp, plainGreedy(j.req.Sampler)
	s.prefilled, s.generating, s.batchIdx = keep, false, -1
	s.text = llama.NewTextStream(j.req.Stop)
	s.res = Result{PromptTokens: len(prompt), CachedTokens: keep, QueueTime: time.Since(j.submitted)}
}

// finish ends the slot's job with a finish reason or an error and frees the slot. The
// sequence stays in the KV cache for prefix reuse.
func (e *Engine) finish(s *slot, reason string, err error) {
	if s.job == nil {
		return
	}
	if err == nil {
		s.job.out.write(s.text.Flush())
	}
	s.res.FinishReason = reason
	s.res.Total = time.Since(s.job.submitted)
	s.job.out.end(s.res, err)
	s.lastUsed = time.Now()
	s.smp.Close()
	s.job, s.smp, s.text, s.generating = nil, nil, nil, false
	e.busy.Add(-1)
}

// forget drops the slot's cached sequence (its KV content is unknown after a failure).
func (e *Engine) forget(s *slot) {
	e.lctx.RemoveSeq(s.id, 0, -1)
	s.cache = s.cache[:0]
}

func (e *Engine) abortAll(err error) {
	for _, s := range e.slots {
		e.finish(s, "", err)
	}
	e.mu.Lock()
	q := e.queue
	e.queue = nil
	e.mu.Unlock()
	for _, j := range q {
		j.out.end(Result{PromptTokens: len(j.req.Prompt)}, err)
	}
}

// pickGroup chooses which adapter's slots run this step. llama.cpp applies adapters to
// the whole context, so one step only batches slots that use the same adapter; groups
// take turns.
func (e *Engine) pickGroup() string {
	groups := map[string]bool{}
	for _, s := range e.slots {
		if s.job != nil {
			groups[s.job.req.Adapter] = true
		}
	}
	if len(groups) <= 1 || !groups[e.lastGroup] {
		for g := range groups {
			if len(groups) == 1 || g != e.lastGroup {
				return g
			}
		}
	}
	// next group after lastGroup in name order, wrapping around
	next, first := "", ""
	haveNext, haveFirst := false, false
	for g := range groups {
		if !haveFirst || g < first {
			first, haveFirst = g, true
		}
		if g > e.lastGroup && (!haveNext || g < next) {
			next, haveNext = g, true
		}
	}
	if haveNext {
		return next
	}
	return first
}

func (e *Engine) useAdapter(name string) error {
	if name == e.curAdapter {
		return nil
	}
	e.lctx.ClearAdapters()
	e.curAdapter = ""
	if name == "" {
		return nil
	}
	a := e.adapter[name]
	if err := e.lctx.SetAdapter(a.Adapter, a.Scale); err != nil {
		return fmt.Errorf("adapter %s: %w", name, err)
	}
	e.curAdapter = name
	return nil
}

// step decodes one batch: a token for every generating slot of the chosen group, then
// prompt chunks for its slots still reading their prompt, then samples.
func (e *Engine) step() {
	group := e.pickGroup()
	e.lastGroup = group
	var in []*slot
	for _, s := range e.slots {
		if s.job != nil && s.job.req.Adapter == group {
			in = append(in, s)
		}
	}
	if err := e.useAdapter(group); err != nil {
		for _, s := range in {
			e.forget(s)
			e.finish(s, "", err)
		}
		return
	}
	b := e.batch
	b.Clear()
	var used []*slot
	for _, s := range in {
		s.batchIdx = -1
		if s.generating {
			s.batchIdx = b.Add(s.next, len(s.cache), s.id, true)
			used = append(used, s)
		}
	}
	// Prompt tokens fill the batch, or only a chunk of it while anyone is generating:
	// their next token waits for this step.
	room := b.Cap()
	if e.anyGenerating() {
		room = min(room, b.Len()+e.cfg.PrefillChunk)
	}
	// Oldest prompts first, so that a long prompt cannot be starved by newer ones.
	for _, s := range oldestFirst(in) {
		if s.generating || b.Len() >= room {
			continue
		}
		p := s.prompt()
		n := min(room-b.Len(), len(p)-s.prefilled)
		scored := s.job.req.PromptLogprobs
		if scored {
			n = min(n, scoredChunk)
		}
		s.chunk, s.chunkIdx = n, b.Len()
		for k := range n {
			i := s.prefilled + k
			idx := b.Add(p[i], i, s.id, scored || i == len(p)-1)
			if i == len(p)-1 {
				s.batchIdx = idx
			}
		}
		used = append(used, s)
	}
	if b.Len() == 0 {
		return
	}
	start := time.Now()
	err := e.lctx.Decode(b)
	if e.cfg.OnStep != nil {
		e.cfg.OnStep(b.Len(), time.Since(start))
	}
	if err != nil {
		if errors.Is(err, llama.ErrNoKVSlot) {
			err = fmt.Errorf("out of KV cache space: %w", err)
		}
		e.log.Error("decode failed", "err", err, "tokens", b.Len(), "slots", len(used))
		for _, s := range used {
			e.forget(s)
			e.finish(s, "", err)
		}
		return
	}
	now := time.Now()
	for _, s := range used {
		if s.generating {
			s.cache = append(s.cache, s.next)
		} else {
			p := s.prompt()
			if s.job.req.PromptLogprobs {
				// The logits at each prompt position score the token after it.
				for k := range s.chunk {
					if i := s.prefilled + k; i+1 < len(p) {
						if l := e.lctx.Logits(s.chunkIdx + k); l != nil {
							lp := logprobOf(l, p[i+1], s.job.req.TopLogprobs)
							lp.Prompt = true
							s.job.out.writeLogprob(lp)
						}
					}
				}
			}
			s.cache = append(s.cache, p[s.prefilled:s.prefilled+s.chunk]...)
			s.prefilled += s.chunk
			if s.prefilled < len(p) {
				continue // more prompt to read next step
			}
			if s.job.req.ScoreOnly {
				e.finish(s, llama.FinishLength, nil)
				continue
			}
			s.generating = true
		}
		e.sampleNext(s, now)
	}
}

// scoredChunk bounds the prompt tokens per step of a request that scores its prompt:
// each keeps a row of logits (the vocabulary's size) until the step is done.
const scoredChunk = 32

// logprobOf is tok's log probability in the distribution the logits give, and the top
// most likely tokens'.
func logprobOf(logits []float32, tok llama.Token, top int) TokenLogprob {
	mx := float32(math.Inf(-1))
	for _, l := range logits {
		mx = max(mx, l)
	}
	var sum float64
	for _, l := range logits {
		sum += math.Exp(float64(l - mx))
	}
	lse := float64(mx) + math.Log(sum)
	lp := TokenLogprob{Token: tok, Logprob: float32(float64(logits[tok]) - lse)}
	if top > 0 {
		// a small sorted list of the best so far: top is at most 20
		for i, l := range logits {
			if len(lp.Top) == top && l <= lp.Top[top-1].Logprob {
				continue
			}
			j := sort.Search(len(lp.Top), func(k int) bool { return lp.Top[k].Logprob < l })
			if len(lp.Top) < top {
				lp.Top = append(lp.Top, TokenProb{})
			}
			copy(lp.Top[j+1:], lp.Top[j:])
			lp.Top[j] = TokenProb{Token: llama.Token(i), Logprob: l}
		}
		for i := range lp.Top {
			lp.Top[i].Logprob = float32(float64(lp.Top[i].Logprob) - lse)
		}
	}
	return lp
}

// anyGenerating reports whether some request, in any adapter group, is producing tokens.
func (e *Engine) anyGenerating() bool {
	for _, s := range e.slots {
		if s.job != nil && s.generating {
			return true
		}
	}
	return false
}

// plainGreedy reports whether p picks the most likely token with nothing that depends on
// history (no penalties): then an argmax over the logits is the whole sampler.
func plainGreedy(p llama.SamplerParams) bool {
	return p.Temperature <= 0 && (p.RepeatPenalty == 0 || p.RepeatPenalty == 1) && p.FrequencyPenalty == 0 && p.PresencePenalty == 0
}

func oldestFirst(in []*slot) []*slot {
	out := append([]*slot(nil), in...)
	sort.SliceStable(out, func(a, b int) bool { return out[a].job.submitted.Before(out[b].job.submitted) })
	return out
}

// sampleNext picks the slot's next token from this step's logits and decides whether
// the request goes on.
func (e *Engine) sampleNext(s *slot, now time.Time) {
	var tok llama.Token
	if s.greedy {
		tok = e.lctx.Argmax(s.batchIdx)
	} else {
		tok = s.smp.Sample(e.lctx, s.batchIdx)
	}
	if s.res.Tokens == 0 {
		s.res.FirstToken = now.Sub(s.job.submitted)
		if e.cfg.OnFirstToken != nil {
			e.cfg.OnFirstToken(s.res.FirstToken)
		}
	} else if e.cfg.OnToken != nil {
		e.cfg.OnToken(now.Sub(s.lastToken))
	}
	s.lastToken = now
	if (e.model.IsEOG(tok) || slices.Contains(s.job.req.StopTokens, tok)) && !s.job.req.IgnoreEOS {
		e.finish(s, llama.FinishStop, nil)
		return
	}
	s.res.Tokens++
	if s.job.req.Logprobs {
		s.job.out.writeLogprob(logprobOf(e.lctx.Logits(s.batchIdx), tok, s.job.req.TopLogprobs))
	}
	s.job.out.write(s.text.Write(e.model.Piece(tok, false)))
	switch {
	case s.text.Stopped:
		e.finish(s, llama.FinishStop, nil)
	case s.job.req.MaxTokens > 0 && s.res.Tokens >= s.job.req.MaxTokens:
		e.finish(s, llama.FinishLength, nil)
	case len(s.cache)+1 >= e.cfg.SlotCtx: // prompt and answer fill the window
		e.finish(s, llama.FinishLength, nil)
	default:
		s.next = tok
	}
}
