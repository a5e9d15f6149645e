package dataset

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// InfoFile is the registry file LLaMA-Factory reads from its dataset_dir.
const InfoFile = "dataset_info.json"

// Registry is a parsed dataset_info.json: dataset name -> where and how to read it.
type Registry struct {
	Dir      string // the dataset directory; file_name entries are relative to it
	Datasets map[string]*DatasetInfo
}

// DatasetInfo is one dataset_info.json entry. Unknown keys are ignored, as in LLaMA-Factory.
type DatasetInfo struct {
	Name          string  `json:"-"`
	HFHubURL      string  `json:"hf_hub_url"`
	MSHubURL      string  `json:"ms_hub_url"`
	OMHubURL      string  `json:"om_hub_url"`
	ScriptURL     string  `json:"script_url"`
	CloudFileName string  `json:"cloud_file_name"`
	FileName      string  `json:"file_name"`
	Formatting    string  `json:"formatting"` // "alpaca" (default) or "sharegpt"
	Ranking       bool    `json:"ranking"`
	Subset        string  `json:"subset"`
	Split         string  `json:"split"`
	Folder        string  `json:"folder"`
	NumSamples    int     `json:"num_samples"`
	Columns       Columns `json:"columns"`
	Tags          Tags    `json:"tags"`
}

// Columns maps LLaMA-Factory's logical columns to the keys used in the data file.
type Columns struct {
	Prompt   string `json:"prompt"`   // alpaca; default "instruction"
	Query    string `json:"query"`    // alpaca; default "input"
	Response string `json:"response"` // alpaca; default "output"
	History  string `json:"history"`  // alpaca; default none
	Messages string `json:"messages"` // sharegpt; default "conversations"
	System   string `json:"system"`   // default none
	Tools    string `json:"tools"`    // default none
	Images   string `json:"images"`
	Videos   string `json:"videos"`
	Audios   string `json:"audios"`
	Chosen   string `json:"chosen"`
	Rejected string `json:"rejected"`
	KTOTag   string `json:"kto_tag"`
}

// Tags names the keys and role values of sharegpt messages.
type Tags struct {
	RoleTag        string `json:"role_tag"`        // default "from"
	ContentTag     string `json:"content_tag"`     // default "value"
	UserTag        string `json:"user_tag"`        // default "human"
	AssistantTag   string `json:"assistant_tag"`   // default "gpt"
	ObservationTag string `json:"observation_tag"` // default "observation"
	FunctionTag    string `json:"function_tag"`    // default "function_call"
	SystemTag      string `json:"system_tag"`      // default "system"
}

// withDefaults fills LLaMA-Factory's defaults into empty fields.
func (d DatasetInfo) withDefaults() DatasetInfo {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&d.Formatting, "alpaca")
	def(&d.Columns.Prompt, "instruction")
	def(&d.Columns.Query, "input")
	def(&d.Columns.Response, "output")
	def(&d.Columns.Messages, "conversations")
	def(&d.Tags.RoleTag, "from")
	def(&d.Tags.ContentTag, "value")
	def(&d.Tags.UserTag, "human")
	def(&d.Tags.AssistantTag, "gpt")
	def(&d.Tags.ObservationTag, "observation")
	def(&d.Tags.FunctionTag, "function_call")
	def(&d.Tags.SystemTag, "system")
	return d
}

// LoadRegistry reads dir/dataset_info.json.
func LoadRegistry(dir string) (Registry, error) {
	path := filepath.Join(dir, InfoFile)
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Registry{}, fmt.Errorf("%s: not found (a dataset directory needs a %s that registers its datasets)", path, InfoFile)
		}
		return Registry{}, err
	}
	data = bytes.TrimPrefix(data, utf8BOM)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Registry{}, jsonError(path, data, err)
	}
	if raw == nil {
		return Registry{}, fmt.Errorf("%s: must be a JSON object of dataset entries", path)
	}
	r := Registry{Dir: dir, Datasets: make(map[string]*DatasetInfo, len(raw))}
	for name, msg := range raw {
		var d DatasetInfo
		dec := json.NewDecoder(bytes.NewReader(msg))
		if err := dec.Decode(&d); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return Registry{}, fmt.Errorf("%s: dataset %q: %q must be a %s, not %s", InfoFile, name, te.Field, jsonTypeName(te.Type.Kind().String()), te.Value)
			}
			return Registry{}, fmt.Errorf("%s: dataset %q: %v", InfoFile, name, err)
		}
		d.Name = name
		r.Datasets[name] = &d
	}
	return r, nil
}

// Names lists the registered datasets in order.
func (r Registry) Names() []string {
	names := make([]string, 0, len(r.Datasets))
	for n := range r.Datasets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Local reports whether a dataset is read from a file in the dataset directory (the only
// kind Conch can load: it never downloads).
func (d *DatasetInfo) Local() bool { return d.hubSource() == "" && d.FileName != "" }

// hubSource describes where a non-local dataset lives, with LLaMA-Factory's precedence
// (hub > script > cloud > file).
func (d *DatasetInfo) hubSource() string {
	switch {
	case d.HFHubURL != "":
		return "the Hugging Face Hub (" + d.HFHubURL + ")"
	case d.MSHubURL != "":
		return "the ModelScope Hub (" + d.MSHubURL + ")"
	case d.OMHubURL != "":
		return "the Modelers Hub (" + d.OMHubURL + ")"
	case d.ScriptURL != "":
		return "a loading script (" + d.ScriptURL + ")"
	case d.CloudFileName != "":
		return "cloud storage (" + d.CloudFileName + ")"
	}
	return ""
}

// lookup finds a dataset by name with an error that lists what is there.
func (r Registry) lookup(name string) (*DatasetInfo, error) {
	if d, ok := r.Datasets[name]; ok {
		return d, nil
	}
	var here, missing, remote []string
	for _, n := range r.Names() {
		d := r.Datasets[n]
		switch {
		case !d.Local():
			remote = append(remote, n)
		case fileExists(filepath.Join(r.Dir, d.FileName)):
			here = append(here, n)
		default:
			missing = append(missing, n)
		}
	}
	msg := fmt.Sprintf("unknown dataset %q in %s: available: %s", name, filepath.Join(r.Dir, InfoFile), listOrNone(here))
	if len(missing) > 0 {
		msg += fmt.Sprintf("; registered but without their file: %d", len(missing))
	}
	if len(remote) > 0 {
		msg += fmt.Sprintf("; on a hub (not available offline): %d", len(remote))
	}
	return nil, errors.New(msg)
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
