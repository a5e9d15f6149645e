// Running the training graphs and the optimiser step.
#include "train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "ggml-cpu.h"

namespace conch_train {

void upload_lora(trainer & t, int i) {
    auto & lt = t.lora[i];
    ggml_backend_tensor_set(lt.w, lt.host.data(), 0, lt.host.size() * sizeof(float));
}

void zero_grads(trainer & t) {
    for (auto & lt : t.lora) ggml_backend_tensor_memset(lt.grad, 0, 0, ggml_nbytes(lt.grad));
    t.n_acc = 0;
    t.acc_dirty = false;
}

// Checks that the backend runs every node (an unsupported op would abort inside ggml),
// then places the graph in the compute buffer.
static void alloc_graph(trainer & t, built_graph & bg) {
    for (int i = 0; i < ggml_graph_n_nodes(bg.g); i++) {
        ggml_tensor * node = ggml_graph_node(bg.g, i);
        if (node->op == GGML_OP_NONE || ggml_is_empty(node)) continue;
        if (!ggml_backend_supports_op(t.backend, node)) {
            throw train_error(std::string("the ") + ggml_backend_name(t.backend) + " backend cannot run " +
                              ggml_op_desc(node) + " (" + ggml_type_name(node->src[0] ? node->src[0]->type : node->type) +
                              ") needed for training");
        }
    }
    if (!ggml_gallocr_alloc_graph(t.galloc, bg.g)) throw train_error("out of memory for the compute buffer");
}

// NEFTune's noise (Jain et al. 2023, as transformers adds it): uniform in
// +-alpha/sqrt(T * n_embd), drawn from the seed the caller set for this sequence.
static void set_noise(const trainer & t, built_graph & bg, int n) {
    const size_t count = (size_t)n * (size_t)t.hp.n_embd;
    const float mag = t.p.neftune_alpha / std::sqrt((float)count);
    rng g{t.noise_seed};
    std::vector<float> v(count);
    for (auto & x : v) x = (2.0f * g.uniform() - 1.0f) * mag;
    ggml_backend_tensor_set(bg.noise, v.data(), 0, count * sizeof(float));
}

// Positions and the causal mask (and tokens) for the graphs that have them.
static void set_common_inputs(const trainer & t, built_graph & bg, const int32_t * tokens, int n) {
    if (bg.tokens) ggml_backend_tensor_set(bg.tokens, tokens, 0, n * sizeof(int32_t));
    if (bg.noise) set_noise(t, bg, n);
    if (!bg.pos) return;
    std::vector<int32_t> pos(n);
    for (int i = 0; i < n; i++) pos[i] = i;
    ggml_backend_tensor_set(bg.pos, pos.data(), 0, n * sizeof(int32_t));
    // Causal mask: row q sees keys 0..q.
    std::vector<float> mask((size_t)n * n);
    for (int q = 0; q < n; q++)
        for (int k = 0; k < n; k++) mask[(size_t)q * n + k] = k <= q ? 0.0f : -INFINITY;
    ggml_backend_tensor_set(bg.mask, mask.data(), 0, mask.size() * sizeof(float));
}

// The supervised rows, their one-hot labels, and the loss gradient of 1 for a backward pass.
static void set_loss_inputs(trainer & t, built_graph & bg, const std::vector<int32_t> & sel, const std::vector<int32_t> & lab) {
    ggml_backend_tensor_set(bg.sel, sel.data(), 0, sel.size() * sizeof(int32_t));
    // One-hot labels, set element by element so no [vocab x rows] host copy is needed.
    ggml_backend_tensor_memset(bg.labels, 0, 0, ggml_nbytes(bg.labels));
    const float one = 1.0f;
    const size_t V = (size_t)t.hp.n_vocab;
    for (size_t j = 0; j < lab.size(); j++) ggml_backend_tensor_set(bg.labels, &one, (j * V + lab[j]) * sizeof(float), sizeof(float));
    if (bg.loss_grad) ggml_backend_tensor_set(bg.loss_grad, &one, 0, sizeof(float));
}

// CONCH_TRAIN_PROFILE=1 runs graphs one node at a time and prints the time spent per op
// (and source types) to stderr: slower overall, but it shows where a step goes.
static void compute_profiled(trainer & t, built_graph & bg, bool detail) {
    ggml_init_params ip = {ggml_graph_overhead_custom(1, false) + ggml_tensor_overhead(), nullptr, true};
    ggml_context * ctx = ggml_init(ip);
    ggml_cgraph * one = ggml_new_graph_custom(ctx, 1, false);
    std::map<std::string, std::pair<double, int>> by_op;
    const auto t_start = std::chrono::steady_clock::now();
    for (int i = 0; i < ggml_graph_n_nodes(bg.g); i++) {
        ggml_tensor * node = ggml_graph_node(bg.g, i);
        if (node->op == GGML_OP_NONE || ggml_is_empty(node)) continue;
        ggml_graph_clear(one);
        ggml_graph_add_node(one, node);
        const auto t0 = std::chrono::steady_clock::now();
        const ggml_status st = ggml_backend_graph_compute(t.backend, one);
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (st != GGML_STATUS_SUCCESS) {
            ggml_free(ctx);
            throw train_error("graph compute failed");
        }
        std::string key = ggml_op_desc(node);
        for (int j = 0; j < 2 && node->src[j]; j++) key += std::string(j ? "," : " ") + ggml_type_name(node->src[j]->type);
        if (detail) {
            // CONCH_TRAIN_PROFILE=2: also by operand shapes
            char buf[96];
            for (int j = 0; j < 2 && node->src[j]; j++) {
                snprintf(buf, sizeof buf, " [%lld,%lld,%lld]%s", (long long)node->src[j]->ne[0], (long long)node->src[j]->ne[1],
                         (long long)node->src[j]->ne[2], ggml_is_contiguous(node->src[j]) ? "" : "nc");
                key += buf;
            }
        }
        auto & e = by_op[key];
        e.first += ms;
        e.second++;
    }
    ggml_free(ctx);
    const double total = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_start).count();
    std::vector<std::pair<std::string, std::pair<double, int>>> rows(by_op.begin(), by_op.end());
    std::sort(rows.begin(), rows.end(), [](const auto & a, const auto & b) { return a.second.first > b.second.first; });
    fprintf(stderr, "conch train profile: %d nodes, %.1f ms\n", ggml_graph_n_nodes(bg.g), total);
    for (const auto & r : rows) {
        if (r.second.first < 0.005 * total) break;
        fprintf(stderr, "  %-64s %9.1f ms %5.1f%% %5d\n", r.first.c_str(), r.second.first, 100 * r.second.first / total, r.second.second);
    }
}

// Matrix-product work of a graph, in FLOPs (the rest is small next to it).
static double graph_flops(ggml_cgraph * g) {
    double f = 0;
    for (int i = 0; i < ggml_graph_n_nodes(g); i++) {
        const ggml_tensor * n = ggml_graph_node(g, i);
        if (n->op == GGML_OP_MUL_MAT) f += 2.0 * (double)n->src[0]->ne[0] * (double)ggml_nelements(n);
        if (n->op == GGML_OP_OUT_PROD) f += 2.0 * (double)n->src[0]->ne[1] * (double)ggml_nelements(n);
    }
    return f;
}

// The CPU backend's threads meet at a barrier after every node. When the average node
// is tiny (a small model on a short sequence) those meetings cost more than the split
// work saves, and a busy machine makes it far worse: a descheduled thread stalls every
// barrier for a time slice. Such graphs run on one thread.
static int threads_for(const trainer & t, ggml_cgraph * g) {
    const int n = t.p.threads > 0 ? t.p.threads : 1;
    // about 1 MFLOP a node: stories260K (n_embd 64) below 300 tokens, no real LLM
    const double min_per_node = 1e6;
    if (n == 1 || graph_flops(g) / std::max(1, ggml_graph_n_nodes(g)) >= min_per_node) return n;
    return 1;
}

static void compute(trainer & t, built_graph & bg) {
    if (!t.gpu) ggml_backend_cpu_set_n_threads(t.backend, threads_for(t, bg.g));
    static const char * profile = getenv("CONCH_TRAIN_PROFILE");
    if (profile) {
        compute_profiled(t, bg, strcmp(profile, "2") == 0);
        return;
    }
    if (ggml_backend_graph_compute(t.backend, bg.g) != GGML_STATUS_SUCCESS) throw train_error("graph compute failed");
}

// A training step with gradient checkpointing: the forward pass keeps each layer's input,
// the head computes the loss and its gradient at the last hidden state, then each layer,
// last to first, is recomputed from its input and run backward, handing the gradient at
// its input to the layer below through two checkpoint slots used in turn.
static float run_train_checkpointed(trainer & t, const int32_t * tokens, int n, const std::vector<int32_t> & sel,
                                    const std::vector<int32_t> & lab) {
    const int L = t.hp.n_layer, low = lowest_lora_layer(t);
    {
        built_graph bg;
        build_graph(t, bg, G_CK_FWD, n, 0);
        alloc_graph(t, bg);
        set_common_inputs(t, bg, tokens, n);
        compute(t, bg);
    }
    int k = 0; // grad_slot(k) holds the gradient at the next layer's output
    float loss = 0;
    // The head in slices of rows: its logits, labels and their gradients are the
    // largest tensors of a step (rows x vocabulary, four times over).
    const int rows = head_rows(t);
    for (size_t r0 = 0; r0 < sel.size(); r0 += rows) {
        const size_t nr = std::min(sel.size() - r0, (size_t)rows);
        const std::vector<int32_t> sel_r(sel.begin() + r0, sel.begin() + r0 + nr), lab_r(lab.begin() + r0, lab.begin() + r0 + nr);
        built_graph bg;
        build_graph(t, bg, G_CK_HEAD, n, (int)nr, -1, -1, low < L ? t.grad_slot(k) : -1);
        alloc_graph(t, bg);
        set_loss_inputs(t, bg, sel_r, lab_r);
        if (bg.dx && r0 == 0) ggml_backend_tensor_memset(bg.dx, 0, 0, ggml_nbytes(bg.dx));
        compute(t, bg);
        float part = 0;
        ggml_backend_tensor_get(bg.loss, &part, 0, sizeof(float));
        loss += part;
    }
    const float one = 1.0f;
    for (int il = L - 1; il >= low; il--) {
        built_graph bg;
        build_graph(t, bg, G_CK_LAYER, n, 0, il, t.grad_slot(k), il > low ? t.grad_slot(1 - k) : -1);
        alloc_graph(t, bg);
        set_common_inputs(t, bg, nullptr, n);
        ggml_backend_tensor_set(bg.loss_grad, &one, 0, sizeof(float));
        if (bg.dx) ggml_backend_tensor_memset(bg.dx, 0, 0, ggml_nbytes(bg.dx));
        compute(t, bg);
        k = 1 - k;
    }
    return loss;
}

void run_loss(trainer & t, bool train, const int32_t * tokens, const int32_t * labels, int n, double * loss_sum, int * n_sup) {
    std::vector<int32_t> sel, lab;
    for (int i = 0; i < n; i++) {
        if (labels[i] >= 0) {
            sel.push_back(i);
            lab.push_back(labels[i]);
        }
    }
    *loss_sum = 0;
    *n_sup = (int)sel.size();
    if (sel.empty()) return;

    float loss = 0;
    if (train && t.p.checkpoint) {
        loss = run_train_checkpointed(t, tokens, n, sel, lab);
    } else {
        built_graph bg;
        build_graph(t, bg, train ? G_TRAIN : G_EVAL, n, (int)sel.size());
        alloc_graph(t, bg);
        set_common_inputs(t, bg, tokens, n);
        set_loss_inputs(t, bg, sel, lab);
        compute(t, bg);
        ggml_backend_tensor_get(bg.loss, &loss, 0, sizeof(float));
    }
    *loss_sum = loss;
    if (train) {
        t.n_acc += (double)sel.size();
        t.acc_dirty = true;
    }
}

void run_logits(trainer & t, const int32_t * tokens, int n, float * out) {
    built_graph bg;
    build_graph(t, bg, G_LOGITS, n, 0);
    alloc_graph(t, bg);
    set_common_inputs(t, bg, tokens, n);
    compute(t, bg);
    ggml_backend_tensor_get(bg.logits, out, 0, ggml_nbytes(bg.logits));
}

// AdamW with decoupled weight decay and bias correction, in the order PyTorch applies it:
//   g  = acc * clip / N                    (N: supervised tokens since the last step)
//   m  = b1 m + (1-b1) g;   v = b2 v + (1-b2) g^2
//   p  = p (1 - lr wd) - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
// with lr times lr_ratio_b for the B halves (LoRA+).
double adamw_step(trainer & t, float lr, float wd, float max_norm) {
    if (t.n_acc <= 0) return 0;
    std::vector<std::vector<float>> g(t.lora.size());
    double sq = 0;
    for (size_t i = 0; i < t.lora.size(); i++) {
        g[i].resize(t.lora[i].host.size());
        ggml_backend_tensor_get(t.lora[i].grad, g[i].data(), 0, g[i].size() * sizeof(float));
        for (float x : g[i]) sq += (double)x * (double)x;
    }
    const double norm = std::sqrt(sq) / t.n_acc;
    double clip = 1.0;
    if (max_norm > 0 && norm > max_norm) clip = max_norm / norm;
    const float gscale = (float)(clip / t.n_acc);

    t.step++;
    const float b1 = t.p.beta1, b2 = t.p.beta2, eps = t.p.eps;
    const float bc1 = (float)(1.0 - std::pow((double)b1, (double)t.step));
    const float bc2 = (float)(1.0 - std::pow((double)b2, (double)t.step));
    const float ratio_b = t.p.lr_ratio_b > 0 ? t.p.lr_ratio_b : 1.0f;
    for (size_t i = 0; i < t.lora.size(); i++) {
        auto & lt = t.lora[i];
        const float lr_i = lt.is_b ? lr * ratio_b : lr;
        const float decay = 1.0f - lr_i * wd;
        const size_t n = lt.host.size();
        float * p = lt.host.data(), * m = lt.m.data(), * v = lt.v.data();
        const float * gi = g[i].data();
        for (size_t j = 0; j < n; j++) {
            const float gj = gi[j] * gscale;
            m[j] = b1 * m[j] + (1.0f - b1) * gj;
            v[j] = b2 * v[j] + (1.0f - b2) * (gj * gj);
            const float mh = m[j] / bc1;
            const float vh = v[j] / bc2;
            p[j] = p[j] * decay - lr_i * (mh / (std::sqrt(vh) + eps));
        }
        upload_lora(t, (int)i);
    }
    zero_grads(t);
    return norm;
}

} // namespace conch_train
