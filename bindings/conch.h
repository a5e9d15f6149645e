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
/* The index-th GPU's description and memory (bytes free now, and in all); non-zero if
 * there is no such GPU. */
int conch_gpu_info(int index, const char ** name, uint64_t * free, uint64_t * total);

/* ---- CPU threads ---- */

struct llama_context;
struct ggml_threadpool;
/* Starts a pool of n_threads CPU threads (the calling thread is one of them) and attaches
 * it to ctx for every decode; null on failure. Free it after llama_free(ctx). */
struct ggml_threadpool * conch_threads_attach(struct llama_context * ctx, int n_threads);
void conch_threads_free(struct ggml_threadpool * tp);

/* ---- adapters at run time ---- */

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

/* ---- training ---- */

/* A LoRA trainer on ggml for llama, qwen2 and qwen3 base models (bindings/train*.cpp).
 * Go validates every argument first (architecture, shapes, token ids, lengths, memory):
 * these functions assume sane input and report what is left (I/O, allocation) as errors. */

enum conch_train_arch { CONCH_TRAIN_LLAMA = 0, CONCH_TRAIN_QWEN2 = 1, CONCH_TRAIN_QWEN3 = 2 };

/* How frozen weights are held. BASE: each matrix in the GGUF's own type (a Q4_K_M file
 * trains as Q4_K_M), its transpose in that type where rows fit, else q8_0 or f16. */
enum conch_train_compute {
    CONCH_TRAIN_F32 = 0, CONCH_TRAIN_F16 = 1, CONCH_TRAIN_BF16 = 2, CONCH_TRAIN_Q8_0 = 3, CONCH_TRAIN_BASE = 4
};

/* Model hyperparameters as llama.cpp derives them from the GGUF header. */
struct conch_train_hparams {
    int   arch;
    int   n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab;
    float rms_eps;
    int   rope_mode;        /* ggml rope mode: 0 normal (llama), 2 neox (qwen) */
    float rope_freq_base, rope_freq_scale, rope_attn_factor;
    int   n_ctx_orig;
    float kq_scale;
};

struct conch_train_params {
    const char * model_path;
    int      rank;
    float    alpha;
    uint32_t targets;       /* bit i: target i of q,k,v,o,gate,up,down; bit 7: the output head
                               (output.weight; the model must not tie it to token_embd) */
    int      max_seq_len;
    int      compute_type;  /* enum conch_train_compute */
    int      threads;
    int      use_gpu;
    uint64_t seed;
    float    beta1, beta2, eps;
    float    neftune_alpha; /* NEFTune: uniform noise of +-alpha/sqrt(T*n_embd) on the training
                               embeddings (0: none); its seed is conch_train_set_noise_seed's */
    float    lr_ratio_b;    /* LoRA+: B tensors take steps of lr * lr_ratio_b (0 or 1: plain) */
    int      checkpoint;    /* gradient checkpointing: keep only each layer's input from the
                               forward pass and recompute the layer during the backward pass */
};

typedef struct conch_trainer conch_trainer;

int  conch_train_new(const struct conch_train_params * p, const struct conch_train_hparams * hp, conch_trainer ** out);
void conch_train_free(conch_trainer * t);
/* Bytes a trainer with these settings would hold (weights, LoRA state, compute buffer for
 * max_seq_len tokens), measured by planning the graph without allocating it. */
int  conch_train_estimate(const struct conch_train_params * p, const struct conch_train_hparams * hp, uint64_t * bytes);
/* Bytes this trainer holds now. */
uint64_t conch_train_memory(conch_trainer * t);
/* mode 0: forward + backward, adding d(loss sum)/dθ to the accumulators; mode 1: forward
 * only. labels[i] is the target of position i or -1. Sets the loss sum and the number of
 * supervised positions. */
int  conch_train_run(conch_trainer * t, int mode, const int32_t * tokens, const int32_t * labels, int n,
                     double * loss_sum, int * n_sup);
/* Logits of every position, row-major [n][n_vocab], into out. */
int  conch_train_logits(conch_trainer * t, const int32_t * tokens, int n, float * out);
/* One AdamW step on the accumulated gradient (see llama/train.go for the exact rule). */
int  conch_train_step(conch_trainer * t, float lr, float weight_decay, float max_grad_norm, double * grad_norm);
int64_t conch_train_step_count(conch_trainer * t);
/* The seed of the NEFTune noise of the following training runs. */
void conch_train_set_noise_seed(conch_trainer * t, uint64_t seed);
/* The LoRA tensors, by index: name, element count, values, accumulated gradient. */
int          conch_train_n_tensors(conch_trainer * t);
const char * conch_train_tensor_name(conch_trainer * t, int i);
int64_t      conch_train_tensor_size(conch_trainer * t, int i);
int  conch_train_get(conch_trainer * t, int i, float * out);
int  conch_train_set(conch_trainer * t, int i, const float * in);
int  conch_train_grad(conch_trainer * t, int i, float * out);
/* llama.cpp LoRA adapter GGUF with extra string metadata. */
int  conch_train_save_adapter(conch_trainer * t, const char * path, const char * const * keys,
                              const char * const * vals, int n_kv);
/* Everything needed to resume bit-exactly: A, B, AdamW moments, step, pending gradients. */
int  conch_train_save_state(conch_trainer * t, const char * path);
int  conch_train_load_state(conch_trainer * t, const char * path);

/* ---- merge and quantize ---- */

/* One LoRA adapter to fold into the base weights: W += scale * (alpha / r) * B * A. */
struct conch_merge_lora {
    const char * path;
    float        scale;
};

/* A metadata value added to the merged file (provenance). type: 0 string, 1 u32, 2 f32. */
struct conch_merge_kv {
    const char * key;
    int          type;
    const char * str;
    uint32_t     u32;
    float        f32;
};

/* Shared with the caller while conch_merge runs (read and written atomically). */
struct conch_merge_progress {
    int32_t done;   /* tensors written */
    int32_t total;
    int32_t cancel; /* set non-zero to stop: conch_merge then fails with "cancelled" */
};

struct conch_merge_params {
    const char * base_path;
    const char * out_path;           /* written from scratch; the caller renames it */
    const struct conch_merge_lora * loras;
    int          n_loras;            /* 0: a plain conversion to the types below */
    const struct conch_merge_kv * kvs;
    int          n_kvs;
    const int32_t * tensor_types;    /* the ggml_type to write for each base tensor, in file
                                        order; each converted row must fill whole blocks */
    int          n_tensor_types;
    int          file_type;          /* general.file_type to record (a llama_ftype); -1 keeps
                                        the base's */
    int          n_threads;          /* 0: all cores */
    struct conch_merge_progress * progress; /* may be NULL */
    int64_t      slice_values;       /* values converted at a time (memory bound); 0: 8M */
};

/* Writes base + adapters to out_path, tensor by tensor, each in its type from
 * tensor_types: a tensor that keeps its type and no adapter touches is copied byte for
 * byte, any other is converted through F32 with ggml's quantiser (the bytes llama.cpp's
 * quantiser writes). Every base key is kept; with adapters, the adapters' own keys
 * (training settings) are recorded under conch.merge.lora.<i> and an earlier merge's
 * conch.merge.* record is replaced. */
int conch_merge(const struct conch_merge_params * p);

/* llama_model_quantize with requantisation allowed; ftype is a llama_ftype. */
int conch_quantize(const char * in_path, const char * out_path, int ftype, int n_threads);

/* Checks that llama.cpp loads the model at path: everything up to reading the weights
 * (metadata, vocabulary, hyperparameters, tensor shapes and bounds), without reading them.
 * 0 when it loads. */
int conch_model_check(const char * path);

#ifdef __cplusplus
}
#endif
#endif
