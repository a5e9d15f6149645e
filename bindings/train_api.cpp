// The C boundary of the trainer (conch.h, "training"): every function catches, sets the
// thread's error message and returns non-zero on failure.
#include "train.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <new>

#include "ggml-cpu.h"

using namespace conch_train;

struct conch_trainer {
    trainer t;
};

template <typename F>
static int guarded(F && f) {
    try {
        f();
        return 0;
    } catch (const std::bad_alloc &) {
        conch_set_error("out of memory");
    } catch (const std::exception & e) {
        conch_set_error(e.what());
    }
    return -1;
}

static void init_backend(trainer & t) {
    if (t.p.use_gpu) {
        ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU);
        if (!dev) throw train_error("this build has no GPU backend (train on the CPU with GPULayers 0)");
        t.backend = ggml_backend_dev_init(dev, nullptr);
        t.gpu = true;
    } else {
        t.backend = ggml_backend_cpu_init();
        if (t.backend) ggml_backend_cpu_set_n_threads(t.backend, t.p.threads > 0 ? t.p.threads : 1);
    }
    if (!t.backend) throw train_error("cannot initialise the compute backend");
}

// Calls plan(bg) for each graph a training step builds, at the longest sequence: the one
// graph, or with checkpointing the forward pass, the head and a layer (all alike).
template <typename F>
static void for_each_step_graph(trainer & t, F && plan) {
    const int T = t.p.max_seq_len, L = t.hp.n_layer;
    const int g0 = t.grad_slot(0), g1 = t.grad_slot(1);
    if (!t.p.checkpoint) {
        built_graph bg;
        build_graph(t, bg, G_TRAIN, T, T);
        plan(bg);
        return;
    }
    const int low = lowest_lora_layer(t);
    {
        built_graph bg;
        build_graph(t, bg, G_CK_FWD, T, 0);
        plan(bg);
    }
    {
        built_graph bg;
        build_graph(t, bg, G_CK_HEAD, T, std::min(T, head_rows(t)), -1, -1, low < L ? g0 : -1);
        plan(bg);
    }
    if (low < L) {
        built_graph bg;
        build_graph(t, bg, G_CK_LAYER, T, 0, L - 1, g0, L - 1 > low ? g1 : -1);
        plan(bg);
    }
}

static size_t checkpoint_bytes(const trainer & t) { return t.p.checkpoint ? t.ck_slot_bytes * (size_t)t.n_slots() : 0; }

static size_t host_bytes(const trainer & t) {
    size_t n = 0;
    for (const auto & lt : t.lora) n += ggml_nelements(lt.w);
    // host copy, two moments and the gradient read back at each step
    return n * 4 * sizeof(float);
}

extern "C" int conch_train_new(const struct conch_train_params * p, const struct conch_train_hparams * hp, conch_trainer ** out) {
    *out = nullptr;
    return guarded([&] {
        auto ct = std::make_unique<conch_trainer>();
        trainer & t = ct->t;
        t.p = *p;
        t.hp = *hp;
        init_backend(t);
        load_model(t);
        if (t.p.checkpoint) alloc_checkpoints(t);
        t.galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(t.backend));
        if (!t.galloc) throw train_error("out of memory");
        // Reserve the compute buffer for the longest sequence now, so that a size that
        // does not fit fails here rather than in the middle of training.
        for_each_step_graph(t, [&](built_graph & bg) {
            if (!ggml_gallocr_reserve(t.galloc, bg.g)) throw train_error("out of memory for the compute buffer");
        });
        *out = ct.release();
    });
}

extern "C" void conch_train_free(conch_trainer * t) { delete t; }

extern "C" int conch_train_estimate(const struct conch_train_params * p, const struct conch_train_hparams * hp, uint64_t * bytes) {
    *bytes = 0;
    return guarded([&] {
        trainer t;
        t.p = *p;
        t.hp = *hp;
        t.measure = true;
        init_backend(t);
        load_model(t);
        if (t.p.checkpoint) alloc_checkpoints(t);
        ggml_backend_buffer_type_t buft = ggml_backend_get_default_buffer_type(t.backend);
        const size_t w = ggml_backend_alloc_ctx_tensors_from_buft_size(t.ctx_w, buft);
        const size_t l = ggml_backend_alloc_ctx_tensors_from_buft_size(t.ctx_l, buft);
        size_t wr = 0;
        for (const auto & pk : t.packs) wr += ggml_backend_alloc_ctx_tensors_from_buft_size(pk.ctx, pk.buft);
        // Plan the compute buffer as NewTrainer reserves it, with the weights and LoRA
        // tensors marked as allocated elsewhere (a placeholder address that nothing reads:
        // planning does not touch tensor data), so the plan matches the real one.
        std::vector<ggml_context *> ctxs = {t.ctx_w, t.ctx_l};
        for (const auto & pk : t.packs) ctxs.push_back(pk.ctx);
        for (ggml_context * c : ctxs)
            for (ggml_tensor * x = ggml_get_first_tensor(c); x; x = ggml_get_next_tensor(c, x)) x->data = placeholder_data();
        t.galloc = ggml_gallocr_new(buft);
        if (!t.galloc) throw train_error("out of memory");
        size_t compute = 0;
        for_each_step_graph(t, [&](built_graph & bg) {
            size_t n = 0;
            ggml_gallocr_reserve_n_size(t.galloc, bg.g, nullptr, nullptr, &n);
            compute = std::max(compute, n);
        });
        *bytes = (uint64_t)(w + wr + l + compute + checkpoint_bytes(t) + host_bytes(t));
    });
}

extern "C" uint64_t conch_train_memory(conch_trainer * ct) {
    trainer & t = ct->t;
    uint64_t n = host_bytes(t);
    if (t.buf_w) n += ggml_backend_buffer_get_size(t.buf_w);
    for (const auto & pk : t.packs)
        if (pk.buf) n += ggml_backend_buffer_get_size(pk.buf);
    if (t.buf_l) n += ggml_backend_buffer_get_size(t.buf_l);
    if (t.galloc) n += ggml_gallocr_get_buffer_size(t.galloc, 0);
    if (t.buf_ck) n += ggml_backend_buffer_get_size(t.buf_ck);
    return n;
}

extern "C" int conch_train_run(conch_trainer * ct, int mode, const int32_t * tokens, const int32_t * labels, int n,
                               double * loss_sum, int * n_sup) {
    *loss_sum = 0;
    *n_sup = 0;
    return guarded([&] { run_loss(ct->t, mode == 0, tokens, labels, n, loss_sum, n_sup); });
}

extern "C" int conch_train_logits(conch_trainer * ct, const int32_t * tokens, int n, float * out) {
    return guarded([&] { run_logits(ct->t, tokens, n, out); });
}

extern "C" int conch_train_step(conch_trainer * ct, float lr, float wd, float max_norm, double * grad_norm) {
    *grad_norm = 0;
    return guarded([&] { *grad_norm = adamw_step(ct->t, lr, wd, max_norm); });
}

extern "C" int64_t conch_train_step_count(conch_trainer * ct) { return ct->t.step; }

extern "C" void conch_train_set_noise_seed(conch_trainer * ct, uint64_t seed) { ct->t.noise_seed = seed; }

extern "C" int conch_train_n_tensors(conch_trainer * ct) { return (int)ct->t.lora.size(); }

extern "C" const char * conch_train_tensor_name(conch_trainer * ct, int i) { return ct->t.lora[i].name.c_str(); }

extern "C" int64_t conch_train_tensor_size(conch_trainer * ct, int i) { return (int64_t)ct->t.lora[i].host.size(); }

extern "C" int conch_train_get(conch_trainer * ct, int i, float * out) {
    const auto & lt = ct->t.lora[i];
    memcpy(out, lt.host.data(), lt.host.size() * sizeof(float));
    return 0;
}

extern "C" int conch_train_set(conch_trainer * ct, int i, const float * in) {
    return guarded([&] {
        auto & lt = ct->t.lora[i];
        memcpy(lt.host.data(), in, lt.host.size() * sizeof(float));
        upload_lora(ct->t, i);
    });
}

extern "C" int conch_train_grad(conch_trainer * ct, int i, float * out) {
    return guarded([&] {
        const auto & lt = ct->t.lora[i];
        ggml_backend_tensor_get(lt.grad, out, 0, ggml_nbytes(lt.grad));
    });
}

extern "C" int conch_train_save_adapter(conch_trainer * ct, const char * path, const char * const * keys,
                                        const char * const * vals, int n_kv) {
    return guarded([&] { save_adapter(ct->t, path, keys, vals, n_kv); });
}

extern "C" int conch_train_save_state(conch_trainer * ct, const char * path) {
    return guarded([&] { save_state(ct->t, path); });
}

extern "C" int conch_train_load_state(conch_trainer * ct, const char * path) {
    return guarded([&] { load_state(ct->t, path); });
}
