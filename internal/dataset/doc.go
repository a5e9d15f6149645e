// Package dataset turns LLaMA-Factory-style supervised fine-tuning data into token ids
// and a loss mask.
//
// The flow is the one a LLaMA-Factory user knows:
//
//	dataset_info.json ──LoadRegistry──► Registry ──Load──► []Conversation
//	Conversation ──Template──► text segments ──Encode──► []Sample (tokens + shifted labels)
//
// Datasets are local json (array) or jsonl files, or folders of them, in the "alpaca" or
// "sharegpt" formatting, with LLaMA-Factory's column names, tag names and defaults
// (data/README.md). Hub entries (hf_hub_url, ms_hub_url, script_url, ...) are reported as
// unavailable offline; preference, KTO and multimodal datasets are refused.
//
// Where Conch differs from LLaMA-Factory, on purpose:
//
//   - Records LLaMA-Factory drops with a warning (a missing response, sharegpt turns in an
//     impossible order) are errors naming the file, record and column: a typo in a small
//     hand-written dataset should not quietly shrink it.
//   - Message content is tokenized without special-token parsing, so text such as
//     "<|im_end|>" in a user message stays text; template text is parsed.
//   - The learned part of a turn is the answer and its end-of-turn token (<|im_end|>,
//     <|eot_id|>, EOS, ...). The newline ChatML puts after <|im_end|> is not learned:
//     generation stops at <|im_end|>, so it is never produced.
//   - Cutoff shares each turn's budget between prompt and response as LLaMA-Factory does
//     (a short response is kept whole, else a short prompt, else both shrink in proportion)
//     and drops turns once the budget is spent. Where LLaMA-Factory cuts a prompt's tail,
//     we keep the generation header (<|im_start|>assistant\n) at its end, so the kept start
//     of the response still follows the header it follows at inference time.
//   - deepseekr1 opens every answer with "<think>\n" in the prompt, as DeepSeek's current
//     template does at inference; an answer without reasoning learns "\n</think>\n\n" first
//     (LLaMA-Factory's empty thought for reasoning templates).
//   - qwen3 follows LLaMA-Factory's qwen3 template: answers without reasoning learn an
//     empty "<think>\n\n</think>\n\n" block first.
//   - num_samples takes the first records rather than a random subset.
//   - The shuffle before the validation split uses our own splitmix64 (Rand), so the
//     data order for a seed never changes with the Go version.
//
// The last position of a sample is never learned (Labels[len-1] == -1), and positions after
// the last learned token are trimmed: they would only cost compute.
package dataset
