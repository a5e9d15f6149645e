// Files the trainer writes: the LoRA adapter (llama.cpp's format) and the resumable
// training state. Go writes them to a temporary name and renames.
#include "train.h"

#include <cstring>
#include <memory>

#include "gguf.h"

namespace conch_train {

namespace {

struct gguf_deleter { void operator()(gguf_context * g) const { gguf_free(g); } };
struct ggml_ctx_deleter { void operator()(ggml_context * c) const { ggml_free(c); } };

const char * arch_name(int arch) {
    switch (arch) {
        case CONCH_TRAIN_LLAMA: return "llama";
        case CONCH_TRAIN_QWEN2: return "qwen2";
        default:                return "qwen3";
    }
}

// A host context holding copies of tensors to hand to gguf_add_tensor.
struct host_tensors {
    std::unique_ptr<ggml_context, ggml_ctx_deleter> ctx;
    explicit host_tensors(size_t n_tensors, size_t bytes) {
        ggml_init_params ip = {ggml_tensor_overhead() * n_tensors + bytes + 256 * n_tensors, nullptr, false};
        ctx.reset(ggml_init(ip));
        if (!ctx) throw train_error("out of memory");
    }
    ggml_tensor * add(gguf_context * g, const std::string & name, const ggml_tensor * like, const float * data) {
        ggml_tensor * x = ggml_new_tensor(ctx.get(), GGML_TYPE_F32, ggml_n_dims(like), like->ne);
        ggml_set_name(x, name.c_str());
        memcpy(x->data, data, ggml_nbytes(x));
        gguf_add_tensor(g, x);
        return x;
    }
};

size_t lora_bytes(const trainer & t) {
    size_t n = 0;
    for (const auto & lt : t.lora) n += lt.host.size() * sizeof(float);
    return n;
}

void write(gguf_context * g, const char * path) {
    if (!gguf_write_to_file(g, path, false)) throw train_error(std::string("cannot write ") + path);
}

bool key_is(const gguf_context * g, const char * key, gguf_type type, int64_t * id) {
    *id = gguf_find_key(g, key);
    return *id >= 0 && gguf_get_kv_type(g, *id) == type;
}

uint32_t need_u32(const gguf_context * g, const char * key) {
    int64_t id;
    if (!key_is(g, key, GGUF_TYPE_UINT32, &id)) throw train_error(std::string("not a conch training state (no ") + key + ")");
    return gguf_get_val_u32(g, id);
}

} // namespace

void save_adapter(trainer & t, const char * path, const char * const * keys, const char * const * vals, int n_kv) {
    std::unique_ptr<gguf_context, gguf_deleter> g(gguf_init_empty());
    gguf_set_val_str(g.get(), "general.type", "adapter");
    gguf_set_val_str(g.get(), "general.architecture", arch_name(t.hp.arch));
    gguf_set_val_str(g.get(), "adapter.type", "lora");
    gguf_set_val_f32(g.get(), "adapter.lora.alpha", t.p.alpha);
    for (int i = 0; i < n_kv; i++) gguf_set_val_str(g.get(), keys[i], vals[i]);
    host_tensors h(t.lora.size(), lora_bytes(t));
    for (const auto & lt : t.lora) h.add(g.get(), lt.name, lt.w, lt.host.data());
    write(g.get(), path);
}

// State layout: the LoRA tensors under their adapter names, AdamW moments as
// "<name>.adam_m" / ".adam_v", pending gradients as "<name>.grad" (only when some were
// accumulated since the last step), and the counters and model identity as keys.
void save_state(trainer & t, const char * path) {
    std::unique_ptr<gguf_context, gguf_deleter> g(gguf_init_empty());
    gguf_set_val_str(g.get(), "general.type", "conch.train.state");
    gguf_set_val_u32(g.get(), "conch.state.version", 1);
    gguf_set_val_str(g.get(), "conch.state.arch", arch_name(t.hp.arch));
    gguf_set_val_u32(g.get(), "conch.state.n_layer", (uint32_t)t.hp.n_layer);
    gguf_set_val_u32(g.get(), "conch.state.n_embd", (uint32_t)t.hp.n_embd);
    gguf_set_val_u32(g.get(), "conch.state.n_vocab", (uint32_t)t.hp.n_vocab);
    gguf_set_val_u32(g.get(), "conch.state.rank", (uint32_t)t.p.rank);
    gguf_set_val_u32(g.get(), "conch.state.targets", t.p.targets);
    gguf_set_val_f32(g.get(), "conch.state.alpha", t.p.alpha);
    gguf_set_val_u64(g.get(), "conch.state.step", (uint64_t)t.step);
    gguf_set_val_f64(g.get(), "conch.state.n_acc", t.n_acc);

    const bool grads = t.acc_dirty;
    host_tensors h(t.lora.size() * 4, lora_bytes(t) * 4);
    std::vector<float> tmp;
    for (const auto & lt : t.lora) {
        h.add(g.get(), lt.name, lt.w, lt.host.data());
        h.add(g.get(), lt.name + ".adam_m", lt.w, lt.m.data());
        h.add(g.get(), lt.name + ".adam_v", lt.w, lt.v.data());
        if (grads) {
            tmp.resize(lt.host.size());
            ggml_backend_tensor_get(lt.grad, tmp.data(), 0, tmp.size() * sizeof(float));
            h.add(g.get(), lt.name + ".grad", lt.w, tmp.data());
        }
    }
    write(g.get(), path);
}

void load_state(trainer & t, const char * path) {
    ggml_context * mc = nullptr;
    gguf_init_params ip = {/*no_alloc =*/ false, /*ctx =*/ &mc};
    std::unique_ptr<gguf_context, gguf_deleter> g(gguf_init_from_file(path, ip));
    if (!g) throw train_error(std::string("cannot read training state ") + path);
    std::unique_ptr<ggml_context, ggml_ctx_deleter> data(mc);

    int64_t id;
    if (!key_is(g.get(), "general.type", GGUF_TYPE_STRING, &id) || strcmp(gguf_get_val_str(g.get(), id), "conch.train.state") != 0) {
        throw train_error(std::string(path) + " is not a conch training state");
    }
    if (need_u32(g.get(), "conch.state.version") != 1) throw train_error("unsupported training state version");
    if (!key_is(g.get(), "conch.state.arch", GGUF_TYPE_STRING, &id) || strcmp(gguf_get_val_str(g.get(), id), arch_name(t.hp.arch)) != 0 ||
        need_u32(g.get(), "conch.state.n_layer") != (uint32_t)t.hp.n_layer ||
        need_u32(g.get(), "conch.state.n_embd") != (uint32_t)t.hp.n_embd ||
        need_u32(g.get(), "conch.state.n_vocab") != (uint32_t)t.hp.n_vocab) {
        throw train_error("the training state was made for another model");
    }
    if (need_u32(g.get(), "conch.state.rank") != (uint32_t)t.p.rank) throw train_error("the training state has another LoRA rank");
    if (need_u32(g.get(), "conch.state.targets") != t.p.targets) throw train_error("the training state has other LoRA targets");
    if (!key_is(g.get(), "conch.state.alpha", GGUF_TYPE_FLOAT32, &id) || gguf_get_val_f32(g.get(), id) != t.p.alpha) {
        throw train_error("the training state has another LoRA alpha");
    }
    int64_t id_step, id_acc;
    if (!key_is(g.get(), "conch.state.step", GGUF_TYPE_UINT64, &id_step) || !key_is(g.get(), "conch.state.n_acc", GGUF_TYPE_FLOAT64, &id_acc)) {
        throw train_error("not a conch training state (no step counters)");
    }

    // Validate everything before changing anything.
    auto find = [&](const std::string & name, const lora_tensor & lt, bool required) -> ggml_tensor * {
        ggml_tensor * x = ggml_get_tensor(data.get(), name.c_str());
        if (!x) {
            if (required) throw train_error("the training state has no tensor " + name);
            return nullptr;
        }
        if (x->type != GGML_TYPE_F32 || !ggml_are_same_shape(x, lt.w)) throw train_error("tensor " + name + " in the training state has the wrong shape");
        return x;
    };
    const bool grads = ggml_get_tensor(data.get(), (t.lora[0].name + ".grad").c_str()) != nullptr;
    for (const auto & lt : t.lora) {
        find(lt.name, lt, true);
        find(lt.name + ".adam_m", lt, true);
        find(lt.name + ".adam_v", lt, true);
        find(lt.name + ".grad", lt, grads);
    }
    for (size_t i = 0; i < t.lora.size(); i++) {
        auto & lt = t.lora[i];
        const size_t nb = lt.host.size() * sizeof(float);
        memcpy(lt.host.data(), find(lt.name, lt, true)->data, nb);
        memcpy(lt.m.data(), find(lt.name + ".adam_m", lt, true)->data, nb);
        memcpy(lt.v.data(), find(lt.name + ".adam_v", lt, true)->data, nb);
        upload_lora(t, (int)i);
    }
    zero_grads(t);
    if (grads) {
        for (auto & lt : t.lora) ggml_backend_tensor_set(lt.grad, find(lt.name + ".grad", lt, true)->data, 0, ggml_nbytes(lt.grad));
        t.acc_dirty = true;
    }
    t.step = (int64_t)gguf_get_val_u64(g.get(), id_step);
    t.n_acc = gguf_get_val_f64(g.get(), id_acc);
}

} // namespace conch_train
