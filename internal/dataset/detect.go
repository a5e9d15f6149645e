package dataset

import (
	"fmt"
	"strings"
)

// TemplateForModel picks the template for a model from its Jinja chat template (the GGUF's
// tokenizer.chat_template) by the markers each family uses. A model without a chat
// template is a base model: "empty". arch only improves the error message.
func TemplateForModel(chatTemplate string, arch string) (*Template, error) {
	name, err := detectTemplate(chatTemplate)
	if err != nil {
		if arch != "" {
			return nil, fmt.Errorf("%s model: %w", arch, err)
		}
		return nil, err
	}
	return TemplateByName(name)
}

func detectTemplate(j string) (string, error) {
	has := func(s ...string) bool {
		for _, x := range s {
			if !strings.Contains(j, x) {
				return false
			}
		}
		return true
	}
	switch {
	case strings.TrimSpace(j) == "":
		return "empty", nil
	case has("<｜User｜>", "<｜Assistant｜>"):
		return "deepseekr1", nil
	case has("<|start_header_id|>", "<|eot_id|>"):
		return "llama3", nil
	case has("<|im_start|>"):
		switch {
		case strings.Contains(j, qwenDefaultSystem):
			return "qwen", nil
		case strings.Contains(j, "<think>") && strings.Contains(j, "enable_thinking"):
			return "qwen3", nil
		}
		return "chatml", nil
	case has("### Instruction:", "### Response:"):
		return "alpaca", nil
	}
	return "", fmt.Errorf("chat template not recognised (%s): choose one of %s", firstLine(j), strings.Join(TemplateNames(), ", "))
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if r := []rune(s); len(r) > 60 {
		s = string(r[:60]) + "..."
	}
	return fmt.Sprintf("%q", s)
}

// EncodePrompt tokenizes the generation prompt of a conversation exactly as Encode
// tokenizes training prompts (BOS where the tokenizer adds it, content without
// special-token parsing): what a server should feed the model.
func (t *Template) EncodePrompt(tok Tokenizer, c Conversation) ([]int32, error) {
	segs, err := t.promptSegments(c)
	if err != nil {
		return nil, err
	}
	e := newEncoder(tok, t)
	first := true
	ids, _, err := e.tokens(segs, &first)
	return ids, err
}
