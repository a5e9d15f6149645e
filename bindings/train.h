// Private header of the LoRA trainer (bindings/train*.cpp). Not part of the C ABI.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "conch.h"
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"

// Defined in init.cpp: the message conch_last_error() returns on this thread.
void conch_set_error(const std::string & msg);

namespace conch_train {

// Errors inside the trainer are thrown as train_error and turned into a message at the
// C boundary; ggml asserts are kept unreachable by validation in Go and here.
struct train_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

enum target : int { T_Q, T_K, T_V, T_O, T_GATE, T_UP, T_DOWN, T_COUNT };

// Bit of conch_train_params.targets after the per-layer targets: LoRA on the output
// head (PEFT's lm_head, llama.cpp's output.weight), applied to the supervised rows.
constexpr uint32_t TARGET_OUTPUT_BIT = 1u << T_COUNT;

// One LoRA tensor (an A or a B half). The host vectors are the source of truth for
// the optimiser; w mirrors host on the backend, grad accumulates d(loss sum)/dw there.
struct lora_tensor {
    std::string name;      // adapter tensor name, e.g. blk.0.attn_q.weight.lora_a
    ggml_tensor * w    = nullptr;
    ggml_tensor * grad = nullptr;
    std::vector<float> host, m, v;
    bool is_b = false;     // a B half (LoRA+ gives it its own learning rate)
};

struct lora_pair {
    int a = -1, b = -1; // indices into trainer::lora
};

struct layer {
    ggml_tensor * attn_norm = nullptr;
    ggml_tensor * w[T_COUNT] = {};            // frozen projections, as used by the forward
    ggml_tensor * wt[T_COUNT] = {};           // phase 2: transposed copies for dX (or null)
    ggml_tensor * bq = nullptr, * bk = nullptr, * bv = nullptr, * bo = nullptr;
    ggml_tensor * b_gate = nullptr, * b_up = nullptr, * b_down = nullptr;
    ggml_tensor * q_norm = nullptr, * k_norm = nullptr;
    ggml_tensor * ffn_norm = nullptr;
    lora_pair lora[T_COUNT];
    bool has_lora[T_COUNT] = {};
};

// What one graph computes. With gradient checkpointing a training step is several
// graphs: the forward pass keeping only each layer's input (G_CK_FWD), then the head
// with the loss (G_CK_HEAD), then each layer again, last to first, recomputed from its
// kept input and run backward (G_CK_LAYER).
enum graph_kind { G_TRAIN, G_EVAL, G_LOGITS, G_CK_FWD, G_CK_HEAD, G_CK_LAYER };

struct built_graph {
    ggml_context * ctx = nullptr;
    ggml_cgraph  * g   = nullptr;
    ggml_tensor  * tokens = nullptr, * pos = nullptr, * mask = nullptr;
    ggml_tensor  * sel = nullptr, * labels = nullptr;
    ggml_tensor  * loss = nullptr, * loss_grad = nullptr, * logits = nullptr;
    ggml_tensor  * noise = nullptr; // NEFTune: added to the embeddings of a training graph
    ggml_tensor  * dx = nullptr; // checkpointing: where the input's gradient accumulates (zero it first)
    ~built_graph() { if (ctx) ggml_free(ctx); }
};

struct trainer {
    conch_train_params p{};
    conch_train_hparams hp{};
    bool measure = false;    // estimate only: tensors are never allocated
    ggml_type wtype = GGML_TYPE_F32; // GGML_TYPE_COUNT: each matrix in its file type (CONCH_TRAIN_BASE)

    ggml_backend_t backend = nullptr;
    bool gpu = false;

    ggml_context * ctx_w = nullptr;        // frozen weights
    ggml_backend_buffer_t buf_w = nullptr;
    // Frozen matrices the CPU multiplies from a buffer in a layout of its own (AMX tiles,
    // repacked blocks): one context and buffer per such buffer type, placed as llama.cpp
    // places them.
    struct packed {
        ggml_backend_buffer_type_t buft = nullptr;
        ggml_context * ctx = nullptr;
        ggml_backend_buffer_t buf = nullptr;
    };
    std::vector<packed> packs;
    ggml_context * ctx_l = nullptr;        // LoRA tensors and gradient accumulators
    ggml_backend_buffer_t buf_l = nullptr;
    ggml_gallocr_t galloc = nullptr;

    ggml_tensor * tok_embd = nullptr, * out_norm = nullptr, * output = nullptr, * output_b = nullptr;
    ggml_tensor * output_t = nullptr;      // phase 2: transposed output matrix (or null)
    ggml_tensor * rope_freqs = nullptr;
    lora_pair out_lora;                    // LoRA on the output head (valid when has_out_lora)
    bool has_out_lora = false;
    std::vector<layer> layers;
    std::vector<lora_tensor> lora;

    // Gradient checkpointing (p.checkpoint): slots of [n_embd, max_seq_len] floats, slot l
    // for layer l's input (n_layer: the head's), then two for the gradient passed from one
    // layer graph to the next (written by one, read by the following): grad_slot(0/1).
    ggml_backend_buffer_t buf_ck = nullptr;
    size_t ck_slot_bytes = 0;
    int n_slots() const { return hp.n_layer + 3; }
    int grad_slot(int k) const { return hp.n_layer + 1 + k; }

    int64_t step = 0;
    double n_acc = 0;      // supervised tokens accumulated since the last step
    bool acc_dirty = false;
    float scale = 1.0f;    // alpha / rank
    uint64_t noise_seed = 0; // NEFTune (p.neftune_alpha): seed of the next training run's noise

    ~trainer();
};

// train_model.cpp
void load_model(trainer & t);   // weights from the GGUF, LoRA init, backend buffers

// train_graph.cpp
// layer, dy_in and dy_out are for the checkpointing kinds: the layer to run backward, and
// the slots its output gradient comes from and its input gradient goes to (-1: none).
void build_graph(trainer & t, built_graph & bg, graph_kind kind, int n_tokens, int n_sel, int layer = -1,
                 int dy_in = -1, int dy_out = -1);
size_t graph_nodes_max(const trainer & t);
int lowest_lora_layer(const trainer & t); // n_layer when no layer has LoRA
int head_rows(const trainer & t);         // checkpointing: supervised rows per head graph (64 MiB of logits)
void alloc_checkpoints(trainer & t);

// train_step.cpp
void run_loss(trainer & t, bool train, const int32_t * tokens, const int32_t * labels, int n, double * loss_sum, int * n_sup);
void run_logits(trainer & t, const int32_t * tokens, int n, float * out);
double adamw_step(trainer & t, float lr, float wd, float max_norm); // returns the pre-clip norm
void upload_lora(trainer & t, int i);
void zero_grads(trainer & t);

// train_io.cpp
void save_adapter(trainer & t, const char * path, const char * const * keys, const char * const * vals, int n_kv);
void save_state(trainer & t, const char * path);
void load_state(trainer & t, const char * path);

const char * target_suffix(int tgt);   // "attn_q", ..., "ffn_down"

// splitmix64: a small, well-mixed generator. The LoRA initialisation takes one stream per
// tensor (so a tensor's values do not depend on which other targets are trained), the
// NEFTune noise one per sequence.
struct rng {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    float uniform() { return (float)(next() >> 40) * (1.0f / 16777216.0f); } // [0, 1)
};

// A non-null address for tensors that are only planned (trainer::measure), never read.
inline void * placeholder_data() {
    alignas(64) static char p[64];
    return p;
}

} // namespace conch_train
