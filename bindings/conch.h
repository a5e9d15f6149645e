/* conch.h: the C boundary between Go and our native code.
 * Plain C: handles, caller-owned buffers, and an error string for every failure.
 * Functions that can fail return 0 on success and non-zero on failure; the message is
 * then available from conch_last_error() on the same thread. */
#ifndef CONCH_H
#define CONCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- process ---- */

/* Initialises llama.cpp's backends once, routes its log through our filter and keeps
 * freed model buffers from staying resident. Safe to call more than once. */
void conch_init(void);
/* Log threshold for llama.cpp/ggml messages: 0 debug, 1 info, 2 warn, 3 error, 4 none. */
void conch_set_log_level(int level);
/* The last error logged by llama.cpp or set by conch on this thread ("" if none). */
const char * conch_last_error(void);
void conch_clear_error(void);
/* Whether a GPU backend was compiled in, and how many GPU devices it sees. */
int conch_gpu_count(void);

/* ---- adapters at run time ---- */

struct llama_context;
struct llama_adapter_lora;
/* Set, remove or clear LoRA adapters on a context, making sure the next decode uses the
 * new set (llama.cpp would otherwise reuse a graph built for the old one). */
int conch_adapter_set(struct llama_context * ctx, struct llama_adapter_lora * a, float scale);
int conch_adapter_rm(struct llama_context * ctx, struct llama_adapter_lora * a);
int conch_adapter_clear(struct llama_context * ctx);

/* ---- benchmarks ---- */

struct llama_sampler;
/* Prefill n_prompt tokens in n_batch chunks, then generate n_gen tokens one decode at a
 * time with smpl, on sequence 0: the C++ reference for the Go decode loop. */
int conch_bench_decode(struct llama_context * ctx, struct llama_sampler * smpl,
                       const int32_t * prompt, int n_prompt, int n_gen,
                       double * pp_seconds, double * tg_seconds);

#ifdef __cplusplus
}
#endif
#endif
