// Package dataset turns LLaMA-Factory-style supervised fine-tuning data into token ids
// and a loss mask.
//
// The flow is the one a LLaMA-Factory user knows:
//
//	dataset_info.json ──LoadRegistry──► Registry ──Load──► []Conversation
//	Conversation ──Template──► text segments ──Encode──► []Sample (tokens + shifted labels)
//
// Datasets are local json (array) or jsonl files in the "alpaca" or "sharegpt" formatting,
// with the same column and tag names and defaults as LLaMA-Factory's data/README.md.
// Hub entries (hf_hub_url, ms_hub_url, script_url, ...) are reported as unavailable
// offline. Records that LLaMA-Factory would silently drop (a missing response, turns in an
// impossible order) are errors here that name the file and the record, because a typo in
// a small hand-written dataset should not quietly shrink it.
package dataset
