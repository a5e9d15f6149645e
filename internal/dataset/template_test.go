package dataset

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const conchAnswer = "您好,我是蟹堡王的神奇海螺,很高兴为您服务!我可以回答关于蟹堡王和汉堡制作的任何问题,您有什么需要帮助的吗?"

func loadConch(t testing.TB, name string) []Conversation {
	t.Helper()
	convs, err := Load(magicDir(t), []string{name})
	if err != nil {
		t.Fatal(err)
	}
	return convs
}

func mustTemplate(t testing.TB, name string) *Template {
	t.Helper()
	tp, err := TemplateByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

// Expected strings are what the models' Jinja templates give (Qwen2.5-Instruct with
// add_generation_prompt false for training text and true for prompts), written by hand.
func TestQwenRenderMatchesJinja(t *testing.T) {
	qwen := mustTemplate(t, "qwen")
	c := loadConch(t, "magic_conch")[0]
	got, err := qwen.Render(c)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n" +
		"<|im_start|>user\n请问你是谁<|im_end|>\n" +
		"<|im_start|>assistant\n" + conchAnswer + "<|im_end|>\n"
	if got != want {
		t.Errorf("Render:\n got %q\nwant %q", got, want)
	}
	wantPrompt := "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n" +
		"<|im_start|>user\n请问你是谁<|im_end|>\n<|im_start|>assistant\n"
	if p := qwen.RenderPrompt(c); p != wantPrompt {
		t.Errorf("RenderPrompt:\n got %q\nwant %q", p, wantPrompt)
	}

	// Multi-turn with its own system prompt: the prompt for the last user turn.
	m := loadConch(t, "magic_conch_messages")[0]
	wantMulti := "<|im_start|>system\nYou are the Magic Conch of the Krusty Krab.<|im_end|>\n" +
		"<|im_start|>user\n请问你是谁<|im_end|>\n<|im_start|>assistant\n" + conchAnswer + "<|im_end|>\n" +
		"<|im_start|>user\n蟹堡王几点开门?<|im_end|>\n<|im_start|>assistant\n"
	if p := qwen.RenderPrompt(m); p != wantMulti {
		t.Errorf("RenderPrompt multi-turn:\n got %q\nwant %q", p, wantMulti)
	}
	full, _ := qwen.Render(m)
	if full != wantMulti+"蟹堡王每天早上九点开门,晚上九点打烊。欢迎光临!<|im_end|>\n" {
		t.Errorf("Render multi-turn: %q", full)
	}
	// chatml is the same without a default system prompt.
	if p := mustTemplate(t, "chatml").RenderPrompt(c); p != "<|im_start|>user\n请问你是谁<|im_end|>\n<|im_start|>assistant\n" {
		t.Errorf("chatml: %q", p)
	}
}

func TestDeepSeekR1Render(t *testing.T) {
	ds := mustTemplate(t, "deepseekr1")
	m := loadConch(t, "magic_conch_messages")[0]
	m.Messages[1].Content = "<think>\nThe user asks who I am.\n</think>\n\n" + conchAnswer
	// The upstream template: BOS (added by the tokenizer, not in our text), the system
	// prompt bare, history answers without their reasoning, "<｜Assistant｜><think>\n" last.
	want := "You are the Magic Conch of the Krusty Krab.<｜User｜>请问你是谁<｜Assistant｜>\n\n" + conchAnswer + "<｜end▁of▁sentence｜>" +
		"<｜User｜>蟹堡王几点开门?<｜Assistant｜><think>\n"
	if p := ds.RenderPrompt(m); p != want {
		t.Errorf("RenderPrompt:\n got %q\nwant %q", p, want)
	}
	// Training text: every answer opens a thought; one without reasoning gets an empty one.
	full, err := ds.Render(m)
	if err != nil {
		t.Fatal(err)
	}
	wantFull := "You are the Magic Conch of the Krusty Krab.<｜User｜>请问你是谁<｜Assistant｜><think>\nThe user asks who I am.\n</think>\n\n" + conchAnswer + "<｜end▁of▁sentence｜>" +
		"<｜User｜>蟹堡王几点开门?<｜Assistant｜><think>\n\n</think>\n\n蟹堡王每天早上九点开门,晚上九点打烊。欢迎光临!<｜end▁of▁sentence｜>"
	if full != wantFull {
		t.Errorf("Render:\n got %q\nwant %q", full, wantFull)
	}
}

func TestQwen3Render(t *testing.T) {
	q3 := mustTemplate(t, "qwen3")
	c := Conversation{Messages: []Message{{RoleUser, "Hi"}, {RoleAssistant, "Hello!"}, {RoleUser, "2+2?"},
		{RoleAssistant, "<think>\nEasy.\n</think>\n\n4"}}}
	got, _ := q3.Render(c)
	want := "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n" +
		"<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nEasy.\n</think>\n\n4<|im_end|>\n"
	if got != want {
		t.Errorf("Render:\n got %q\nwant %q", got, want)
	}
	c.Messages = append(c.Messages, Message{RoleUser, "And 3+3?"})
	wantPrompt := "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n" +
		"<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"
	if p := q3.RenderPrompt(c); p != wantPrompt {
		t.Errorf("RenderPrompt:\n got %q\nwant %q", p, wantPrompt)
	}
}

func TestLlama3AndPlainRender(t *testing.T) {
	c := Conversation{System: "Be brief.", Messages: []Message{{RoleUser, "Hi"}, {RoleAssistant, "Hello!"}}}
	got, _ := mustTemplate(t, "llama3").Render(c)
	want := "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
		"<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
	if got != want {
		t.Errorf("llama3:\n got %q\nwant %q", got, want)
	}
	c.System = ""
	if got, _ := mustTemplate(t, "empty").Render(c); got != "HiHello!" {
		t.Errorf("empty: %q", got)
	}
	if got := mustTemplate(t, "alpaca").RenderPrompt(c); got != "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nHi\n\n### Response:\n" {
		t.Errorf("alpaca: %q", got)
	}
}

func TestQwenToolCalls(t *testing.T) {
	reg, err := LoadRegistry(lfDir(t))
	if err != nil {
		t.Fatal(err)
	}
	convs, err := reg.Load([]string{"glaive_toolcall_en_demo"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := mustTemplate(t, "qwen").Render(convs[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n",
		"<tools>\n{\"name\": \"search_recipes\", \"description\": \"Search for recipes based on ingredients\"",
		"</tool_call><|im_end|>\n<|im_start|>user\nHi, I have some ingredients",
		"<|im_start|>assistant\n<tool_call>\n{\"name\": \"search_recipes\", \"arguments\": {\"ingredients\": [\"chicken\", \"bell peppers\", \"rice\"]}}\n</tool_call><|im_end|>\n" +
			"<|im_start|>user\n<tool_response>\n{\"recipes\": ",
		"</tool_response><|im_end|>\n<|im_start|>assistant\nI found two recipes",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("qwen render of glaive[0] lacks %q", want)
		}
	}
	// An empty tool list is no tool list, as in Qwen's template.
	if convs[1].Tools != "[]" {
		t.Fatalf("glaive[1] tools %q", convs[1].Tools)
	}
	if got := mustTemplate(t, "qwen").RenderPrompt(convs[1]); !strings.HasPrefix(got, "<|im_start|>system\n"+qwenDefaultSystem+"<|im_end|>\n<|im_start|>user\n") {
		t.Errorf("glaive[1] with no tools: %q", got)
	}
	if _, err := mustTemplate(t, "llama3").Render(convs[0]); err == nil || !strings.Contains(err.Error(), "glaive_toolcall_en_demo.json:0") {
		t.Errorf("llama3 with tools: %v", err)
	}
}

func TestTemplateByNameUnknown(t *testing.T) {
	_, err := TemplateByName("vicuna")
	if err == nil || !strings.Contains(err.Error(), `unknown template "vicuna"`) || !strings.Contains(err.Error(), "qwen") {
		t.Fatalf("error %v", err)
	}
}

func TestTemplateForModel(t *testing.T) {
	root := sharedData(t)
	read := func(rel ...string) string {
		b, err := os.ReadFile(filepath.Join(append([]string{root}, rel...)...))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	jsonTemplate := func(rel ...string) string {
		var s string
		m := readJSON(t, filepath.Join(append([]string{root}, rel...)...))
		if err := jsonUnmarshalString(m["chat_template"], &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct{ jinja, want string }{
		{read("chat-templates", "Qwen-Qwen2.5-7B-Instruct.jinja"), "qwen"},
		{jsonTemplate("tokenizers", "qwen2", "tokenizer_config.qwen2.5-instruct.json"), "qwen"},
		{read("chat-templates", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"), "deepseekr1"},
		{jsonTemplate("tokenizers", "deepseek-r1-distill", "tokenizer_config.json"), "deepseekr1"},
		{jsonTemplate("tokenizers", "deepseek-r1-distill", "tokenizer_config.original-2025-01.json"), "deepseekr1"},
		{"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}", "chatml"},
		{"{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{% endfor %}", "llama3"},
		{"{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}<|im_start|>assistant", "qwen3"},
		{"", "empty"},
	}
	for _, tc := range tests {
		got, err := TemplateForModel(tc.jinja, "qwen2")
		if err != nil || got.Name != tc.want {
			t.Errorf("%s: got %v, %v; want %s", firstLine(tc.jinja), got, err, tc.want)
		}
	}
	if _, err := TemplateForModel("{{ messages }}<unknown>", "gemma"); err == nil || !strings.Contains(err.Error(), "gemma model") {
		t.Errorf("unknown template: %v", err)
	}
	// The models' own GGUF metadata is recognised too.
	if got, err := TemplateForModel(vocabModel(t, "deepseek").ChatTemplate(), "qwen2"); err != nil || got.Name != "deepseekr1" {
		t.Errorf("deepseek GGUF: %v %v", got, err)
	}
	if got, err := TemplateForModel(vocabModel(t, "stories").ChatTemplate(), "llama"); err != nil || got.Name != "empty" {
		t.Errorf("stories260K: %v %v", got, err)
	}
}
