package api

import (
	"strings"

	"github.com/magicconch/conch/internal/engine"
	"github.com/magicconch/conch/llama"
)

// Wire types of the OpenAI-compatible API (the subset conchd implements).

type usage struct {
	PromptTokens        int          `json:"prompt_tokens"`
	CompletionTokens    int          `json:"completion_tokens"`
	TotalTokens         int          `json:"total_tokens"`
	PromptTokensDetails promptDetail `json:"prompt_tokens_details"`
}

// promptDetail says how much of the prompt was reused from an earlier request's cache
// (a chat's previous turns) instead of being computed again.
type promptDetail struct {
	CachedTokens int `json:"cached_tokens"`
}

func usageOf(r engine.Result) usage {
	return usage{PromptTokens: r.PromptTokens, CompletionTokens: r.Tokens, TotalTokens: r.PromptTokens + r.Tokens,
		PromptTokensDetails: promptDetail{CachedTokens: r.CachedTokens}}
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// samplingFields are the request fields /v1/chat/completions and /v1/completions share.
type samplingFields struct {
	Model            string         `json:"model"`
	Stream           bool           `json:"stream"`
	StreamOptions    *streamOptions `json:"stream_options"`
	MaxTokens        *int           `json:"max_tokens"`
	Temperature      *float64       `json:"temperature"`
	TopP             *float64       `json:"top_p"`
	TopK             *int           `json:"top_k"`
	MinP             *float64       `json:"min_p"`
	N                *int           `json:"n"`
	Stop             stopList       `json:"stop"`
	Seed             *int64         `json:"seed"`
	PresencePenalty  *float64       `json:"presence_penalty"`
	FrequencyPenalty *float64       `json:"frequency_penalty"`
	RepeatPenalty    *float64       `json:"repeat_penalty"`
	IgnoreEOS        bool           `json:"ignore_eos"`
	Logprobs         *bool          `json:"logprobs"`
	User             string         `json:"user"`
}

func (f *samplingFields) options() (options, *apiError) {
	if f.N != nil && *f.N != 1 {
		return options{}, badRequest("n", "only n=1 is supported, got %d", *f.N)
	}
	return options{
		MaxTokens: f.MaxTokens, Temperature: f.Temperature, TopP: f.TopP, TopK: f.TopK, MinP: f.MinP,
		Seed: f.Seed, PresencePenalty: f.PresencePenalty, FrequencyPenalty: f.FrequencyPenalty,
		RepeatPenalty: f.RepeatPenalty, Stop: f.Stop, IgnoreEOS: f.IgnoreEOS,
		Logprobs: f.Logprobs != nil && *f.Logprobs,
	}, nil
}

func (f *samplingFields) modelName() string { return f.Model }

// options adds chat's own fields: max_completion_tokens (OpenAI's newer max_tokens) and
// top_logprobs.
func (r *chatRequest) options() (options, *apiError) {
	if r.MaxTokens == nil {
		r.MaxTokens = r.MaxCompletionTokens
	}
	o, aerr := r.samplingFields.options()
	o.TopLogprobs = r.TopLogprobs
	return o, aerr
}

func (f *samplingFields) includeUsage() bool {
	return f.StreamOptions != nil && f.StreamOptions.IncludeUsage
}

type chatMessage struct {
	Role    string         `json:"role"`
	Content messageContent `json:"content"`
	Name    string         `json:"name"`
}

type chatRequest struct {
	samplingFields
	Messages            []chatMessage `json:"messages"`
	MaxCompletionTokens *int          `json:"max_completion_tokens"`
	TopLogprobs         *int          `json:"top_logprobs"`
}

// chatLogprobs are a choice's log probabilities: one entry per generated token.
type chatLogprobs struct {
	Content []logprobEntry `json:"content"`
}

type logprobEntry struct {
	Token       string       `json:"token"`
	Logprob     float32      `json:"logprob"`
	Bytes       []int        `json:"bytes"` // the token's bytes: a token may hold part of a character
	TopLogprobs []topLogprob `json:"top_logprobs"`
}

type topLogprob struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// logprobsOf renders the engine's entries on the wire; nil when there are none.
func logprobsOf(m *llama.Model, lps []engine.TokenLogprob) *chatLogprobs {
	if len(lps) == 0 {
		return nil
	}
	token := func(t llama.Token) (string, []int) {
		b := m.Piece(t, false)
		ints := make([]int, len(b))
		for i, c := range b {
			ints[i] = int(c)
		}
		return string(b), ints
	}
	out := &chatLogprobs{Content: make([]logprobEntry, len(lps))}
	for i, lp := range lps {
		e := &out.Content[i]
		e.Token, e.Bytes = token(lp.Token)
		e.Logprob = lp.Logprob
		e.TopLogprobs = make([]topLogprob, len(lp.Top))
		for k, alt := range lp.Top {
			tl := &e.TopLogprobs[k]
			tl.Token, tl.Bytes = token(alt.Token)
			tl.Logprob = alt.Logprob
		}
	}
	return out
}

type completionRequest struct {
	samplingFields
	Prompt promptInput `json:"prompt"`
	Echo   bool        `json:"echo"`
	// The legacy API's logprobs is a number: how many alternatives to list per token
	// (it hides samplingFields' boolean of the same name).
	Logprobs *int `json:"logprobs"`
}

// completionLogprobs are the legacy API's log probabilities, one list entry per token. The
// first token of a scored prompt has none: null in both lists.
type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []*float32           `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"` // byte offset of each token in the choice's text
}

// legacyLogprobs renders the engine's entries in the legacy format, chunk by chunk,
// keeping the text offset across chunks.
type legacyLogprobs struct {
	m      *llama.Model
	first  *llama.Token // a scored prompt's first token, not yet rendered
	offset int
}

func (r *legacyLogprobs) render(lps []engine.TokenLogprob) *completionLogprobs {
	if len(lps) == 0 && r.first == nil {
		return nil
	}
	out := &completionLogprobs{}
	add := func(piece string, lp *float32, top map[string]float32) {
		out.Tokens = append(out.Tokens, piece)
		out.TokenLogprobs = append(out.TokenLogprobs, lp)
		out.TopLogprobs = append(out.TopLogprobs, top)
		out.TextOffset = append(out.TextOffset, r.offset)
		r.offset += len(piece)
	}
	if r.first != nil {
		add(string(r.m.Piece(*r.first, true)), nil, nil)
		r.first = nil
	}
	for _, lp := range lps {
		top := make(map[string]float32, len(lp.Top))
		for _, alt := range lp.Top {
			// Two tokens can read the same (parts of one character): keep the likelier.
			k := string(r.m.Piece(alt.Token, false))
			if _, ok := top[k]; !ok {
				top[k] = alt.Logprob
			}
		}
		// Prompt tokens are spelled as the model read them, special tokens included.
		add(string(r.m.Piece(lp.Token, lp.Prompt)), &lp.Logprob, top)
	}
	return out
}

// promptText is the prompt as the model read it: its tokens' pieces, special tokens
// spelled out.
func promptText(m *llama.Model, toks []llama.Token) string {
	var b strings.Builder
	for _, t := range toks {
		b.Write(m.Piece(t, true))
	}
	return b.String()
}

type chatResponseMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatChoice struct {
	Index        int                 `json:"index"`
	Message      chatResponseMessage `json:"message"`
	Logprobs     any                 `json:"logprobs"`
	FinishReason string              `json:"finish_reason"`
}

type chatResponse struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint"`
	Choices           []chatChoice `json:"choices"`
	Usage             usage        `json:"usage"`
}

type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type chatChunkChoice struct {
	Index        int       `json:"index"`
	Delta        chatDelta `json:"delta"`
	Logprobs     any       `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type chatChunk struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	Created           int64             `json:"created"`
	Model             string            `json:"model"`
	SystemFingerprint string            `json:"system_fingerprint"`
	Choices           []chatChunkChoice `json:"choices"`
	Usage             *usage            `json:"usage,omitempty"`
}

type completionChoice struct {
	Text         string  `json:"text"`
	Index        int     `json:"index"`
	Logprobs     any     `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
}

type completionResponse struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	Created           int64              `json:"created"`
	Model             string             `json:"model"`
	SystemFingerprint string             `json:"system_fingerprint"`
	Choices           []completionChoice `json:"choices"`
	Usage             *usage             `json:"usage,omitempty"`
}

type modelCard struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

type modelList struct {
	Object string      `json:"object"`
	Data   []modelCard `json:"data"`
}
