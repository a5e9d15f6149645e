package llama

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// GenerateOptions control Generate.
type GenerateOptions struct {
	MaxTokens int      // most tokens to generate (0: until EOS or the context is full)
	Stop      []string // generation ends before the first of these
	Sampler   SamplerParams
	// Cached says that the first Cached tokens of the prompt are already in sequence 0,
	// left there by an earlier Generate on this context with no other use of sequence 0
	// or change of adapters since (a chat's next turn: its Sequence tells what it left).
	// They are kept rather than computed again. 0 starts from an empty sequence.
	Cached int
}

// Finish reasons, as OpenAI names them.
const (
	FinishStop   = "stop"   // EOS or a stop string
	FinishLength = "length" // MaxTokens or a full context
)

// GenerateResult summarises a generation.
type GenerateResult struct {
	Text         string
	PromptTokens int
	CachedTokens int // of PromptTokens, kept from the sequence (GenerateOptions.Cached)
	Tokens       int // generated
	FinishReason string
	PromptTime   time.Duration // prefill
	GenTime      time.Duration // from the first generated token to the last
	// Sequence is what sequence 0 holds afterwards: the prompt and the generated tokens
	// that were decoded (all but the last sampled one). Pass its common prefix with the
	// next prompt as GenerateOptions.Cached.
	Sequence []Token
}

// Generate runs prompt through sequence 0 of the context (clearing it first) and
// streams the answer: emit receives pieces that are always whole UTF-8 characters and
// never include a stop string. emit returning false, or ctx ending, stops generation.
func (c *Context) Generate(ctx context.Context, prompt []Token, opt GenerateOptions, emit func(string) bool) (GenerateResult, error) {
	return c.generate(ctx, prompt, opt, emit, false)
}

// generate is Generate; ignoreEOS keeps going past end-of-generation tokens (benchmarks).
func (c *Context) generate(ctx context.Context, prompt []Token, opt GenerateOptions, emit func(string) bool, ignoreEOS bool) (GenerateResult, error) {
	var res GenerateResult
	if len(prompt) == 0 {
		return res, errors.New("empty prompt")
	}
	if len(prompt) >= c.nCtx {
		return res, fmt.Errorf("prompt of %d tokens does not fit the context of %d", len(prompt), c.nCtx)
	}
	smp, err := NewSampler(opt.Sampler)
	if err != nil {
		return res, err
	}
	defer smp.Close()
	batch := NewBatch(c.nBat)
	defer batch.Free()
	// At least the prompt's last token is decoded: its logits give the first answer token.
	cached := max(0, min(opt.Cached, len(prompt)-1))
	if cached == 0 || !c.RemoveSeq(0, cached, -1) {
		c.RemoveSeq(0, 0, -1)
		cached = 0
	}
	res.PromptTokens, res.CachedTokens = len(prompt), cached
	seq := append(make([]Token, 0, len(prompt)+opt.MaxTokens), prompt...)

	start := time.Now()
	for i := cached; i < len(prompt); i += c.nBat {
		batch.Clear()
		end := min(i+c.nBat, len(prompt))
		for j := i; j < end; j++ {
			batch.Add(prompt[j], j, 0, j == len(prompt)-1)
		}
		if err := c.Decode(batch); err != nil {
			return res, err
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
	}
	res.PromptTime = time.Since(start)
	for _, t := range prompt {
		smp.Accept(t)
	}

	stream := NewTextStream(opt.Stop)
	var text []byte
	out := func(s string) bool {
		if s == "" {
			return true
		}
		text = append(text, s...)
		return emit == nil || emit(s)
	}
	genStart := time.Now()
	pos, last := len(prompt), batch.Len()-1
	res.FinishReason = FinishLength
	for {
		if ctx.Err() != nil {
			res.Text, res.Sequence = string(text), seq
			return res, ctx.Err()
		}
		tok := smp.Sample(c, last)
		if !ignoreEOS && c.model.IsEOG(tok) {
			res.FinishReason = FinishStop
			break
		}
		res.Tokens++
		if !out(stream.Write(c.model.Piece(tok, false))) {
			res.FinishReason = FinishStop
			break
		}
		if stream.Stopped {
			res.FinishReason = FinishStop
			break
		}
		if opt.MaxTokens > 0 && res.Tokens >= opt.MaxTokens || pos+1 >= c.nCtx {
			break
		}
		batch.Clear()
		last = batch.Add(tok, pos, 0, true)
		pos++
		if err := c.Decode(batch); err != nil {
			res.Text = string(text)
			return res, err
		}
		seq = append(seq, tok)
	}
	out(stream.Flush())
	res.GenTime = time.Since(genStart)
	res.Text, res.Sequence = string(text), seq
	return res, nil
}

// CommonPrefix is how many tokens a and b share from the start: what a sequence holding
// a can keep for a prompt b.
func CommonPrefix(a, b []Token) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
