package dataset

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Load reads the named datasets registered in dir/dataset_info.json, in order.
func Load(dir string, names []string) ([]Conversation, error) {
	r, err := LoadRegistry(dir)
	if err != nil {
		return nil, err
	}
	return r.Load(names)
}

// Load reads the named datasets, in order, into one list.
func (r Registry) Load(names []string) ([]Conversation, error) {
	if len(names) == 0 {
		return nil, errors.New("no dataset named")
	}
	var all []Conversation
	for _, name := range names {
		name = strings.TrimSpace(name)
		d, err := r.lookup(name)
		if err != nil {
			return nil, err
		}
		convs, err := r.loadOne(*d)
		if err != nil {
			return nil, err
		}
		all = append(all, convs...)
	}
	return all, nil
}

func (r Registry) loadOne(info DatasetInfo) ([]Conversation, error) {
	d := info.withDefaults()
	if src := d.hubSource(); src != "" {
		return nil, fmt.Errorf("dataset %q is hosted on %s, which is not available offline: download it into %s and register it with \"file_name\"", d.Name, src, r.Dir)
	}
	if d.FileName == "" {
		return nil, fmt.Errorf("dataset %q: no \"file_name\" in %s", d.Name, InfoFile)
	}
	if d.Formatting != "alpaca" && d.Formatting != "sharegpt" {
		return nil, fmt.Errorf("dataset %q: unknown formatting %q (alpaca or sharegpt)", d.Name, d.Formatting)
	}
	if d.Ranking || d.Columns.Chosen != "" || d.Columns.Rejected != "" {
		return nil, fmt.Errorf("dataset %q is a preference (ranking) dataset: supervised fine-tuning needs prompt/response data", d.Name)
	}
	if d.Columns.KTOTag != "" {
		return nil, fmt.Errorf("dataset %q is a KTO dataset: supervised fine-tuning needs prompt/response data", d.Name)
	}
	if c := firstNonEmpty(d.Columns.Images, d.Columns.Videos, d.Columns.Audios); c != "" {
		return nil, fmt.Errorf("dataset %q has media (%q column): multimodal data is not supported", d.Name, c)
	}
	files, err := r.dataFiles(d)
	if err != nil {
		return nil, err
	}
	var convs []Conversation
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(r.Dir, f))
		if err != nil {
			return nil, fmt.Errorf("dataset %q: %w", d.Name, err)
		}
		recs, err := parseRecords(f, data)
		if err != nil {
			return nil, err
		}
		for _, rec := range recs {
			c, err := toConversation(d, f, rec)
			if err != nil {
				return nil, err
			}
			convs = append(convs, c)
		}
	}
	if len(convs) == 0 {
		return nil, fmt.Errorf("dataset %q (%s): no records", d.Name, d.FileName)
	}
	// num_samples: LLaMA-Factory draws a random subset; we take the first ones so that a
	// run is reproducible without a seed here (Encode shuffles with its seed anyway).
	if d.NumSamples > 0 && d.NumSamples < len(convs) {
		convs = convs[:d.NumSamples]
	}
	return convs, nil
}

// dataFiles resolves file_name: a json/jsonl file, or a folder of them (read in name order).
func (r Registry) dataFiles(d DatasetInfo) ([]string, error) {
	path := filepath.Join(r.Dir, d.FileName)
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("dataset %q: file %s not found", d.Name, path)
		}
		return nil, fmt.Errorf("dataset %q: %w", d.Name, err)
	}
	if !st.IsDir() {
		if !jsonName(d.FileName) {
			return nil, fmt.Errorf("dataset %q: %s: unsupported file type (json and jsonl files are supported)", d.Name, d.FileName)
		}
		return []string{d.FileName}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("dataset %q: %w", d.Name, err)
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && jsonName(e.Name()) {
			files = append(files, filepath.Join(d.FileName, e.Name()))
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("dataset %q: folder %s holds no .json or .jsonl files", d.Name, path)
	}
	sort.Strings(files)
	return files, nil
}

func jsonName(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".json" || ext == ".jsonl"
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
