package dataset

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func magicDir(t testing.TB) string { return filepath.Join(sharedData(t), "magic_conch") }
func lfDir(t testing.TB) string    { return filepath.Join(sharedData(t), "datasets", "llama-factory") }

func TestLoadMagicConchAlpaca(t *testing.T) {
	convs, err := Load(magicDir(t), []string{"magic_conch"})
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 30 {
		t.Fatalf("got %d conversations, want 30", len(convs))
	}
	c := convs[21] // has an input column
	want := []Message{{RoleUser, "把下面这句话翻译成英文\n欢迎光临蟹堡王"}, {RoleAssistant, "Welcome to the Krusty Krab!"}}
	if !equalMessages(c.Messages, want) || c.System != "" {
		t.Errorf("record 21 = %+v, want %+v", c, want)
	}
	if c.Source != "magic_conch.json:21" || c.Dataset != "magic_conch" {
		t.Errorf("source %q dataset %q", c.Source, c.Dataset)
	}
}

func TestLoadMagicConchMessages(t *testing.T) {
	convs, err := Load(magicDir(t), []string{"magic_conch_messages"})
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 3 {
		t.Fatalf("got %d conversations, want 3", len(convs))
	}
	c := convs[0]
	if c.System != "You are the Magic Conch of the Krusty Krab." {
		t.Errorf("system %q", c.System)
	}
	roles := ""
	for _, m := range c.Messages {
		roles += m.Role + " "
	}
	if roles != "user assistant user assistant " {
		t.Errorf("roles %q", roles)
	}
}

func TestLoadLlamaFactoryDemos(t *testing.T) {
	dir := lfDir(t)
	reg, err := LoadRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Datasets) < 100 {
		t.Errorf("registry has %d datasets", len(reg.Datasets))
	}
	ident, err := reg.Load([]string{"identity"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ident) != 91 || !strings.Contains(ident[0].Messages[1].Content, "{{name}}") {
		t.Errorf("identity: %d records, first %+v", len(ident), ident[0])
	}
	glaive, err := reg.Load([]string{"glaive_toolcall_en_demo"})
	if err != nil {
		t.Fatal(err)
	}
	if len(glaive) != 300 {
		t.Fatalf("glaive: %d records", len(glaive))
	}
	c := glaive[0]
	wantRoles := []string{RoleUser, RoleAssistant, RoleUser, RoleToolCall, RoleTool, RoleAssistant, RoleUser, RoleAssistant}
	for i, m := range c.Messages {
		if i >= len(wantRoles) || m.Role != wantRoles[i] {
			t.Fatalf("glaive[0] message %d role %q, want %v", i, m.Role, wantRoles)
		}
	}
	if !strings.HasPrefix(c.Tools, `[{"name": "search_recipes"`) {
		t.Errorf("tools %q", c.Tools)
	}
	// Both at once, in order.
	both, err := reg.Load([]string{"identity", " glaive_toolcall_en_demo"})
	if err != nil || len(both) != 391 || both[91].Dataset != "glaive_toolcall_en_demo" {
		t.Fatalf("identity+glaive: %d, %v", len(both), err)
	}
}

// writeDataset makes a dataset dir with one dataset_info.json and files.
func writeDataset(t *testing.T, info string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if info != "" {
		if err := os.WriteFile(filepath.Join(dir, InfoFile), []byte(info), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadJSONLAndColumns(t *testing.T) {
	dir := writeDataset(t, `{"d": {"file_name": "d.jsonl", "columns": {"prompt": "q", "response": "a", "system": "sys", "history": "h"}}}`,
		map[string]string{"d.jsonl": "{\"q\": \"hi\", \"a\": \"yo\", \"sys\": \"be brief\", \"h\": [[\"a\", \"b\"]]}\n\n{\"q\": \"x\", \"input\": \"y\", \"a\": \"z\"}\n"})
	convs, err := Load(dir, []string{"d"})
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 2 {
		t.Fatalf("%d conversations", len(convs))
	}
	want0 := []Message{{RoleUser, "a"}, {RoleAssistant, "b"}, {RoleUser, "hi"}, {RoleAssistant, "yo"}}
	if !equalMessages(convs[0].Messages, want0) || convs[0].System != "be brief" {
		t.Errorf("record 0: %+v", convs[0])
	}
	if got := convs[1].Messages[0].Content; got != "x\ny" || convs[1].Source != "d.jsonl:1" {
		t.Errorf("record 1: %q %s", got, convs[1].Source)
	}
}

func TestLoadErrors(t *testing.T) {
	alpacaInfo := `{"d": {"file_name": "d.json"}}`
	shareInfo := `{"d": {"file_name": "d.json", "formatting": "sharegpt"}}`
	tests := []struct {
		name, info, file, dataset string
		want                      []string // substrings of the error
	}{
		{"no dataset_info.json", "", "", "d", []string{InfoFile, "not found"}},
		{"unknown dataset", alpacaInfo + "", "[]", "nope", []string{`unknown dataset "nope"`, "available: d"}},
		{"file missing", `{"d": {"file_name": "gone.json"}}`, "", "d", []string{`dataset "d"`, "gone.json not found"}},
		{"invalid JSON", alpacaInfo, "[\n  {\"instruction\": \"a\", \"output\": \"b\"},\n  {\"instruction\": \"a\" \"output\": \"b\"}\n]", "d",
			[]string{"d.json: line 3, column 23 (byte 63)", "invalid JSON"}},
		{"truncated JSON", alpacaInfo, "[\n  {\"instruction\": \"a\",", "d", []string{"d.json: line 2", "invalid JSON"}},
		{"invalid JSONL", `{"d": {"file_name": "d.json"}}`, "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": oops}\n", "d",
			[]string{"d.json: line 2, column", "invalid JSON"}},
		{"missing column", alpacaInfo, `[{"instruction": "a", "output": "b"}, {"instruction": "a"}]`, "d",
			[]string{`d.json: record 1 (line 1): missing "output"`}},
		{"wrong type", alpacaInfo, "[\n{\"instruction\": \"a\", \"output\": \"b\"},\n{\"instruction\": \"a\", \"output\": \"b\"},\n{\"instruction\": \"a\", \"output\": \"b\"},\n{\"instruction\": \"a\", \"output\": 3}]", "d",
			[]string{`d.json: record 3 (line 5): "output" must be a string, not a number`}},
		{"record not an object", alpacaInfo, `["hello"]`, "d", []string{"record 0", "must be a JSON object, not a string"}},
		{"bad history", `{"d": {"file_name": "d.json", "columns": {"history": "h"}}}`, `[{"instruction": "a", "output": "b", "h": [["x"]]}]`, "d",
			[]string{"record 0", `"h"[0] must be a [prompt, response] pair`}},
		{"empty dataset", alpacaInfo, "[]", "d", []string{`dataset "d" (d.json): no records`}},
		{"empty file", alpacaInfo, "  \n", "d", []string{"no records"}},
		{"unknown formatting", `{"d": {"file_name": "d.json", "formatting": "csvish"}}`, "[]", "d", []string{`unknown formatting "csvish"`}},
		{"hub dataset", `{"d": {"hf_hub_url": "llamafactory/alpaca_en"}}`, "", "d", []string{"Hugging Face Hub (llamafactory/alpaca_en)", "not available offline"}},
		{"script dataset", `{"d": {"script_url": "my_script"}}`, "", "d", []string{"loading script", "not available offline"}},
		{"ranking", `{"d": {"file_name": "d.json", "ranking": true}}`, "[]", "d", []string{"preference"}},
		{"bad registry type", `{"d": {"file_name": 3}}`, "", "d", []string{InfoFile, `dataset "d"`, "file_name"}},
		{"bad registry JSON", `{"d": `, "", "d", []string{InfoFile, "invalid JSON"}},
		{"sharegpt order", shareInfo, `[{"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}]`, "d",
			[]string{"record 0", `conversations[1]: role "human" where an assistant turn`}},
		{"sharegpt starts with gpt", shareInfo, `[{"conversations": [{"from": "system", "value": "s"}, {"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]}]`, "d",
			[]string{"record 0", `conversations[1]: role "gpt" where a user turn`}},
		{"sharegpt ends with user", shareInfo, `[{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"}]}]`, "d",
			[]string{"record 0", `ends with a "human" turn`}},
		{"sharegpt unknown role", shareInfo, `[{"conversations": [{"from": "robot", "value": "a"}, {"from": "gpt", "value": "b"}]}]`, "d",
			[]string{`role "robot"`}},
		{"sharegpt missing messages", shareInfo, `[{"messages": []}]`, "d", []string{`record 0 (line 1): missing "conversations"`}},
		{"sharegpt content type", shareInfo, `[{"conversations": [{"from": "human", "value": 1}, {"from": "gpt", "value": "b"}]}]`, "d",
			[]string{`conversations[0]: "value" must be a string, not a number`}},
		{"sharegpt empty", shareInfo, `[{"conversations": []}]`, "d", []string{"no user and assistant turns"}},
		{"txt file", `{"d": {"file_name": "d.txt"}}`, "", "d", []string{"d.txt: unsupported file type"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{}
			if tc.file != "" {
				files["d.json"] = tc.file
			}
			if strings.Contains(tc.info, "d.txt") {
				files["d.txt"] = "text"
			}
			dir := writeDataset(t, tc.info, files)
			_, err := Load(dir, []string{tc.dataset})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestUnknownDatasetListsKnown(t *testing.T) {
	_, err := Load(lfDir(t), []string{"alpaca_fr"})
	if err == nil || !strings.Contains(err.Error(), "available: glaive_toolcall_en_demo, identity;") {
		t.Fatalf("error %v should list the local datasets", err)
	}
	_, err = Load(lfDir(t), []string{"alpaca_en_demo"}) // registered, file removed from shared/data
	if err == nil || !strings.Contains(err.Error(), "alpaca_en_demo.json not found") {
		t.Fatalf("error %v", err)
	}
}

func equalMessages(a, b []Message) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
