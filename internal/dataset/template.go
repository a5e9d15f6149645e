package dataset

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Template renders conversations into text segments the way a model's chat format wants
// them. Template text (control tokens such as <|im_start|>) is tokenized with special-token
// parsing; message content is not, so a user typing "<|im_end|>" cannot inject a control
// token. The built-in templates follow LLaMA-Factory's templates of the same name, which
// in turn reproduce the models' own Jinja chat templates.
type Template struct {
	Name          string
	DefaultSystem string   // used when a conversation has no system prompt
	Stop          []string // texts that end an assistant turn, for serving; nil: the tokenizer's EOS

	systemPrefix, systemSuffix string
	userPrefix, userSuffix     string
	toolPrefix, toolSuffix     string // a tool's result (LLaMA-Factory "observation")
	assistantPrefix            string // opens an assistant turn: the generation prompt
	afterToolPrefix            string // opens an assistant turn that follows a tool result
	endOfTurn                  string // closes an assistant turn and is learned; "" = the tokenizer's EOS token
	separator                  string // after endOfTurn, not learned
	// Reasoning models. thinkOpen ends the generation prompt (DeepSeek-R1 forces
	// "<think>\n"); an answer without reasoning learns emptyThought first, as
	// LLaMA-Factory's reasoning templates do by default; in prompts, earlier answers lose
	// their reasoning, as the models' own templates render history.
	thinkOpen, emptyThought string
	trimHistory             bool // strip newlines before a history answer (Qwen3)
	tools                   toolStyle
	toolCall                func(content string) string // formats a tool call the model makes
}

type toolStyle int

const (
	toolsUnsupported toolStyle = iota
	toolsQwen                  // a # Tools section in the system prompt
	toolsIgnored               // the model's own template drops tool definitions
)

// segment is a piece of rendered text.
type segment struct {
	Text    string
	Special bool // template text: tokenize with special-token parsing
	EOS     bool // stands for the tokenizer's end-of-sequence token (Text is empty)
	Train   bool // part of a response: learned
}

const (
	qwenDefaultSystem = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
	dsBegin           = "<｜begin▁of▁sentence｜>"
	dsEnd             = "<｜end▁of▁sentence｜>"
)

func chatml(name, defaultSystem string) *Template {
	return &Template{
		Name: name, DefaultSystem: defaultSystem, Stop: []string{"<|im_end|>"},
		systemPrefix: "<|im_start|>system\n", systemSuffix: "<|im_end|>\n",
		userPrefix: "<|im_start|>user\n", userSuffix: "<|im_end|>\n",
		toolPrefix: "<|im_start|>user\n<tool_response>\n", toolSuffix: "\n</tool_response><|im_end|>\n",
		assistantPrefix: "<|im_start|>assistant\n", endOfTurn: "<|im_end|>", separator: "\n",
		tools:    toolsQwen,
		toolCall: func(c string) string { return "<tool_call>\n" + c + "\n</tool_call>" },
	}
}

var builtins = map[string]func() *Template{
	"qwen":   func() *Template { return chatml("qwen", qwenDefaultSystem) },
	"chatml": func() *Template { return chatml("chatml", "") },
	// qwen3: ChatML without a default system prompt; answers carry a (possibly empty)
	// <think></think> block.
	"qwen3": func() *Template {
		t := chatml("qwen3", "")
		t.emptyThought, t.trimHistory = "<think>\n\n</think>\n\n", true
		return t
	},
	"deepseekr1": func() *Template {
		return &Template{
			Name: "deepseekr1", Stop: []string{dsEnd},
			userPrefix:      "<｜User｜>",
			toolPrefix:      "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>",
			toolSuffix:      "<｜tool▁output▁end｜><｜tool▁outputs▁end｜>",
			assistantPrefix: "<｜Assistant｜><think>\n", endOfTurn: dsEnd,
			thinkOpen: "<think>\n", emptyThought: "\n</think>\n\n",
			tools: toolsIgnored, toolCall: deepseekToolCall,
		}
	},
	"llama3": func() *Template {
		return &Template{
			Name: "llama3", Stop: []string{"<|eot_id|>"},
			systemPrefix: "<|start_header_id|>system<|end_header_id|>\n\n", systemSuffix: "<|eot_id|>",
			userPrefix: "<|start_header_id|>user<|end_header_id|>\n\n", userSuffix: "<|eot_id|>",
			toolPrefix: "<|start_header_id|>ipython<|end_header_id|>\n\n", toolSuffix: "<|eot_id|>",
			assistantPrefix: "<|start_header_id|>assistant<|end_header_id|>\n\n", endOfTurn: "<|eot_id|>",
		}
	},
	// empty: plain text for base models; the prompt runs straight into the response, which
	// ends with the tokenizer's EOS.
	"empty": func() *Template { return &Template{Name: "empty"} },
	"alpaca": func() *Template {
		return &Template{
			Name:          "alpaca",
			DefaultSystem: "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n",
			userPrefix:    "### Instruction:\n", userSuffix: "\n\n",
			toolPrefix: "### Instruction:\n", toolSuffix: "\n\n",
			assistantPrefix: "### Response:\n", separator: "\n\n",
		}
	},
}

// TemplateNames lists the built-in templates.
func TemplateNames() []string {
	names := make([]string, 0, len(builtins))
	for n := range builtins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// TemplateByName returns a built-in template.
func TemplateByName(name string) (*Template, error) {
	mk, ok := builtins[strings.ToLower(strings.TrimSpace(name))]
	if !ok {
		return nil, fmt.Errorf("unknown template %q (known: %s, or auto)", name, strings.Join(TemplateNames(), ", "))
	}
	return mk(), nil
}

// turn is one source/target pair as LLaMA-Factory encodes it: the prompt part since the
// previous response, and the response that follows it.
type turn struct{ source, target []segment }

func tmpl(s string) segment    { return segment{Text: s, Special: true} }
func content(s string) segment { return segment{Text: s} }

// normalized moves a leading system message into System.
func normalized(c Conversation) Conversation {
	if c.System == "" && len(c.Messages) > 0 && c.Messages[0].Role == RoleSystem {
		c.System = c.Messages[0].Content
		c.Messages = c.Messages[1:]
	}
	return c
}

// header is the system part that opens every conversation.
func (t *Template) header(c Conversation) ([]segment, error) {
	system := c.System
	if system == "" {
		system = t.DefaultSystem
	}
	var segs []segment
	tools := splitTools(c.Tools)
	if len(tools) > 0 {
		switch t.tools {
		case toolsUnsupported:
			return nil, fmt.Errorf("%s: template %s has no format for tool definitions", c.Source, t.Name)
		case toolsQwen:
			intro := qwenToolsIntro
			if system == "" {
				intro = strings.TrimPrefix(intro, "\n\n") // Qwen3 and plain ChatML: the section alone
			}
			segs = append(segs, tmpl(t.systemPrefix), content(system), tmpl(intro))
			for _, tool := range tools {
				segs = append(segs, tmpl("\n"), content(tool))
			}
			return append(segs, tmpl(qwenToolsOutro), tmpl(t.systemSuffix)), nil
		}
	}
	if system == "" {
		return nil, nil
	}
	return []segment{tmpl(t.systemPrefix), content(system), tmpl(t.systemSuffix)}, nil
}

// Qwen2.5's tool section, reproduced so that tool-calling data trains the format the
// model already knows.
const (
	qwenToolsIntro = "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
		"You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
	qwenToolsOutro = "\n</tools>\n\nFor each function call, return a json object with function name and arguments " +
		"within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>"
)

// splitTools returns one JSON text per tool, keeping each tool's own key order and spacing.
// An empty list means no tools, as in the models' templates.
func splitTools(tools string) []string {
	if strings.TrimSpace(tools) == "" {
		return nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal([]byte(tools), &list); err != nil {
		return []string{tools}
	}
	out := make([]string, 0, len(list))
	for _, t := range list {
		out = append(out, string(bytes.TrimSpace(t)))
	}
	return out
}

// deepseekToolCall renders {"name": ..., "arguments": ...} the way DeepSeek's template does.
func deepseekToolCall(c string) string {
	var call struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := json.Unmarshal([]byte(c), &call); err != nil || call.Name == "" {
		return c
	}
	args := string(call.Arguments)
	var s string
	if json.Unmarshal(call.Arguments, &s) == nil {
		args = s // arguments given as a JSON string already
	}
	return "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>" + call.Name +
		"\n```json\n" + args + "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
}

// prompt renders one prompt-side message.
func (t *Template) prompt(m Message) []segment {
	switch m.Role {
	case RoleTool:
		return []segment{tmpl(t.toolPrefix), content(m.Content), tmpl(t.toolSuffix)}
	case RoleSystem:
		return []segment{tmpl(t.systemPrefix), content(m.Content), tmpl(t.systemSuffix)}
	}
	return []segment{tmpl(t.userPrefix), content(m.Content), tmpl(t.userSuffix)}
}

// opener is the generation prompt for an assistant turn after a message of role prev.
func (t *Template) opener(prev string) string {
	if prev == RoleTool && t.afterToolPrefix != "" {
		return t.afterToolPrefix
	}
	if prev == RoleTool && t.thinkOpen != "" {
		return "" // DeepSeek's template continues straight after the tool outputs
	}
	return t.assistantPrefix
}

// response renders an assistant turn's learned part: content and end of turn. A history
// turn in a prompt is rendered without reasoning.
func (t *Template) response(m Message, opener string, history bool) []segment {
	text := m.Content
	if m.Role == RoleToolCall && t.toolCall != nil {
		text = t.toolCall(text)
	}
	var segs []segment
	switch {
	case t.emptyThought == "":
	case history:
		if i := strings.LastIndex(text, "</think>"); i >= 0 {
			text = text[i+len("</think>"):]
			if t.trimHistory {
				text = strings.TrimLeft(text, "\n")
			}
		}
	case t.thinkOpen != "" && !strings.HasSuffix(opener, t.thinkOpen):
		// No thought here (DeepSeek continues straight after tool outputs).
	case strings.Contains(text, "</think>"):
		if t.thinkOpen != "" { // the prompt already opened the thought
			text = strings.TrimPrefix(strings.TrimPrefix(text, strings.TrimSpace(t.thinkOpen)), "\n")
		}
	default:
		segs = append(segs, segment{Text: t.emptyThought, Special: true, Train: true})
	}
	segs = append(segs, segment{Text: text, Train: true})
	if t.endOfTurn == "" {
		return append(segs, segment{EOS: true, Train: true})
	}
	return append(segs, segment{Text: t.endOfTurn, Special: true, Train: true})
}

// turns renders a conversation for training: one pair per assistant turn. Messages after
// the last assistant turn have nothing to learn and are left out.
func (t *Template) turns(c Conversation) ([]turn, error) {
	c = normalized(c)
	head, err := t.header(c)
	if err != nil {
		return nil, err
	}
	var out []turn
	cur := turn{source: head}
	prev := ""
	for _, m := range c.Messages {
		if responseRole(m.Role) {
			op := t.opener(prev)
			cur.source = append(cur.source, tmpl(op))
			cur.target = t.response(m, op, false)
			out = append(out, cur)
			cur = turn{}
			if t.separator != "" {
				cur.source = []segment{tmpl(t.separator)}
			}
		} else {
			cur.source = append(cur.source, t.prompt(m)...)
		}
		prev = m.Role
	}
	return out, nil
}

// promptSegments renders a conversation for generation: everything up to the last
// prompt-side message, then the generation prompt. Earlier assistant turns are rendered
// as the model's own template renders history (DeepSeek-R1 drops their reasoning).
func (t *Template) promptSegments(c Conversation) ([]segment, error) {
	c = normalized(c)
	last := len(c.Messages) - 1
	for last >= 0 && responseRole(c.Messages[last].Role) {
		last--
	}
	segs, err := t.header(c)
	if err != nil {
		return nil, err
	}
	prev := ""
	for _, m := range c.Messages[:last+1] {
		if responseRole(m.Role) {
			op := t.opener(prev)
			if t.thinkOpen != "" {
				op = strings.TrimSuffix(op, t.thinkOpen)
			}
			segs = append(segs, tmpl(op))
			segs = append(segs, t.response(m, op, true)...)
			segs = append(segs, tmpl(t.separator))
		} else {
			segs = append(segs, t.prompt(m)...)
		}
		prev = m.Role
	}
	return append(segs, tmpl(t.opener(prev))), nil
}

// RenderPrompt is the text up to and including the generation prompt for the last user
// (or tool) turn: what a server feeds the model so that it answers in the format it was
// fine-tuned on. Trailing assistant turns are left out. The text has no BOS (tokenize it
// with the tokenizer's special tokens added), and templates that end turns with the
// tokenizer's EOS (empty, alpaca) cannot spell it in text: EncodePrompt gives the exact
// tokens training used. A conversation the template cannot render gives "".
func (t *Template) RenderPrompt(c Conversation) string {
	segs, err := t.promptSegments(c)
	if err != nil {
		return ""
	}
	return joinSegments(segs)
}

// Render is the full training text of a conversation (no BOS; EOS markers as nothing).
func (t *Template) Render(c Conversation) (string, error) {
	turns, err := t.turns(c)
	if err != nil {
		return "", err
	}
	var segs []segment
	for i, tr := range turns {
		segs = append(segs, tr.source...)
		segs = append(segs, tr.target...)
		if i == len(turns)-1 && t.separator != "" {
			segs = append(segs, tmpl(t.separator))
		}
	}
	return joinSegments(segs), nil
}

func joinSegments(segs []segment) string {
	var b strings.Builder
	for _, s := range segs {
		b.WriteString(s.Text)
	}
	return b.String()
}
