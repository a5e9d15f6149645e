// Trainer setup: frozen weights read from the base GGUF with gguf.h (dequantised to the
// compute type), LoRA tensors created and initialised, backend buffers allocated.
#include "train.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include "ggml-cpu.h"
#include "gguf.h"

namespace conch_train {

const char * target_suffix(int tgt) {
    static const char * names[T_COUNT] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    return names[tgt];
}

trainer::~trainer() {
    if (galloc) ggml_gallocr_free(galloc);
    if (buf_ck) ggml_backend_buffer_free(buf_ck);
    if (buf_l) ggml_backend_buffer_free(buf_l);
    if (buf_w) ggml_backend_buffer_free(buf_w);
    for (auto & pk : packs) {
        if (pk.buf) ggml_backend_buffer_free(pk.buf);
        if (pk.ctx) ggml_free(pk.ctx);
    }
    if (ctx_l) ggml_free(ctx_l);
    if (ctx_w) ggml_free(ctx_w);
    if (backend) ggml_backend_free(backend);
}

namespace {

struct gguf_deleter { void operator()(gguf_context * g) const { gguf_free(g); } };
struct ggml_ctx_deleter { void operator()(ggml_context * c) const { ggml_free(c); } };
struct file_closer { void operator()(FILE * f) const { fclose(f); } };

// A frozen tensor to fill from the file once the buffer exists (transposed: dst holds
// the matrix's transpose, for the hand-made backward of a frozen projection).
struct pending {
    ggml_tensor * dst;
    int64_t src_id;
    bool transposed;
    bool whole; // a repacking buffer takes the tensor in one piece
};

struct loader {
    trainer & t;
    std::unique_ptr<gguf_context, gguf_deleter> g;
    std::unique_ptr<ggml_context, ggml_ctx_deleter> meta;
    std::vector<pending> todo;

    explicit loader(trainer & t) : t(t) {}

    void open() {
        ggml_context * m = nullptr;
        gguf_init_params ip = {/*no_alloc =*/ true, /*ctx =*/ &m};
        g.reset(gguf_init_from_file(t.p.model_path, ip));
        if (!g) throw train_error(std::string("cannot read GGUF ") + t.p.model_path);
        meta.reset(m);
    }

    ggml_tensor * src(const std::string & name) {
        return ggml_get_tensor(meta.get(), name.c_str());
    }

    // Declares a frozen tensor in ctx_w (or ctx) with the file's shape and type `type`
    // (GGML_TYPE_COUNT: keep the file's type). Returns null when optional and absent.
    ggml_tensor * want(const std::string & name, ggml_type type, bool required, ggml_context * ctx = nullptr) {
        ggml_tensor * s = src(name);
        if (!s) {
            if (required) throw train_error("the model has no tensor " + name);
            return nullptr;
        }
        if (type == GGML_TYPE_COUNT) type = s->type;
        ggml_tensor * d = ggml_new_tensor(ctx ? ctx : t.ctx_w, type, ggml_n_dims(s), s->ne);
        ggml_set_name(d, name.c_str());
        todo.push_back({d, gguf_find_tensor(g.get(), name.c_str()), false, ctx != nullptr});
        return d;
    }

    // Declares the transpose of matrix `name` in type `type`, named "<name>.T".
    ggml_tensor * want_transposed(const std::string & name, ggml_type type) {
        ggml_tensor * s = src(name);
        if (!s || ggml_n_dims(s) != 2) throw train_error("the model has no matrix " + name);
        ggml_tensor * d = ggml_new_tensor_2d(t.ctx_w, type, s->ne[1], s->ne[0]);
        ggml_set_name(d, (name + ".T").c_str());
        todo.push_back({d, gguf_find_tensor(g.get(), name.c_str()), true, false});
        return d;
    }

    // Reads a whole tensor as F32 rows.
    void read_f32(FILE * f, const pending & p, ggml_tensor * s, std::vector<float> & out) {
        const size_t src_row = ggml_row_size(s->type, s->ne[0]);
        const int64_t rows = ggml_nrows(s);
        const size_t off = gguf_get_data_offset(g.get()) + gguf_get_tensor_offset(g.get(), p.src_id);
        std::vector<uint8_t> raw(src_row);
        out.resize((size_t)(rows * s->ne[0]));
        const auto * tr = ggml_get_type_traits(s->type);
        if (fseeko(f, (off_t)off, SEEK_SET) != 0) throw train_error(std::string("cannot read tensor ") + ggml_get_name(s));
        for (int64_t r = 0; r < rows; r++) {
            if (fread(raw.data(), 1, src_row, f) != src_row) throw train_error(std::string("cannot read tensor ") + ggml_get_name(s));
            float * row = out.data() + r * s->ne[0];
            if (s->type == GGML_TYPE_F32) memcpy(row, raw.data(), src_row);
            else tr->to_float(raw.data(), row, s->ne[0]);
        }
    }

    // Fills a transposed copy: W [n_in, n_out] as F32, then Wt [n_out, n_in] in chunks of
    // rows converted to the destination type.
    void fill_transposed(FILE * f, const pending & p, ggml_tensor * s) {
        std::vector<float> w;
        read_f32(f, p, s, w);
        const int64_t n_in = s->ne[0], n_out = s->ne[1];
        const ggml_type dt = p.dst->type;
        const size_t dst_row = ggml_row_size(dt, n_out);
        const int64_t chunk = std::max<int64_t>(1, (int64_t)((32u << 20) / (n_out * sizeof(float))));
        std::vector<float> c;
        std::vector<uint8_t> conv;
        for (int64_t j0 = 0; j0 < n_in; j0 += chunk) {
            const int64_t nj = std::min(chunk, n_in - j0);
            c.resize((size_t)(nj * n_out));
            for (int64_t i = 0; i < n_out; i++) {
                const float * row = w.data() + i * n_in + j0;
                for (int64_t j = 0; j < nj; j++) c[(size_t)(j * n_out + i)] = row[j];
            }
            const void * out = c.data();
            if (dt != GGML_TYPE_F32) {
                conv.resize(nj * dst_row);
                ggml_quantize_chunk(dt, c.data(), conv.data(), 0, nj, n_out, nullptr);
                out = conv.data();
            }
            ggml_backend_tensor_set(p.dst, out, j0 * dst_row, nj * dst_row);
        }
    }

    // Reads every declared tensor from the file into its backend buffer, converting rows
    // in chunks so that host memory stays small next to the model.
    void fill() {
        std::unique_ptr<FILE, file_closer> f(fopen(t.p.model_path, "rb"));
        if (!f) throw train_error(std::string("cannot open ") + t.p.model_path);
        const size_t data_off = gguf_get_data_offset(g.get());
        std::vector<uint8_t> raw;
        std::vector<float> f32;
        std::vector<uint8_t> conv;
        for (const auto & p : todo) {
            ggml_tensor * s = ggml_get_tensor(meta.get(), gguf_get_tensor_name(g.get(), p.src_id));
            if (p.transposed) {
                fill_transposed(f.get(), p, s);
                continue;
            }
            const ggml_type st = s->type, dt = p.dst->type;
            const int64_t ne0 = s->ne[0], rows = ggml_nrows(s);
            const size_t src_row = ggml_row_size(st, ne0), dst_row = ggml_row_size(dt, ne0);
            const int64_t chunk = p.whole ? rows : std::max<int64_t>(1, (int64_t)((32u << 20) / std::max(src_row, ne0 * sizeof(float))));
            const size_t off = data_off + gguf_get_tensor_offset(g.get(), p.src_id);
            const auto * tr_src = ggml_get_type_traits(st);
            for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
                const int64_t nr = std::min(chunk, rows - r0);
                raw.resize(nr * src_row);
                if (fseeko(f.get(), (off_t)(off + r0 * src_row), SEEK_SET) != 0 ||
                    fread(raw.data(), 1, raw.size(), f.get()) != raw.size()) {
                    throw train_error(std::string("cannot read tensor ") + ggml_get_name(p.dst) + " from " + t.p.model_path);
                }
                const void * out = raw.data();
                if (st != dt) {
                    f32.resize(nr * ne0);
                    if (st == GGML_TYPE_F32) {
                        memcpy(f32.data(), raw.data(), f32.size() * sizeof(float));
                    } else {
                        if (!tr_src->to_float) throw train_error(std::string("cannot convert tensor type ") + ggml_type_name(st));
                        tr_src->to_float(raw.data(), f32.data(), nr * ne0);
                    }
                    if (dt == GGML_TYPE_F32) {
                        out = f32.data();
                    } else {
                        conv.resize(nr * dst_row);
                        ggml_quantize_chunk(dt, f32.data(), conv.data(), 0, nr, ne0, nullptr);
                        out = conv.data();
                    }
                }
                ggml_backend_tensor_set(p.dst, out, r0 * dst_row, nr * dst_row);
            }
        }
    }
};

// The CPU's extra buffer types, in the order llama.cpp tries them: weights laid out for
// its fastest matrix kernels (AMX tiles for q4_0/q8_0, repacked q4_0/q4_K blocks).
std::vector<ggml_backend_buffer_type_t> cpu_extra_bufts() {
    std::vector<ggml_backend_buffer_type_t> out;
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!cpu) return out;
    auto get = (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(cpu), "ggml_backend_dev_get_extra_bufts");
    if (!get) return out;
    for (ggml_backend_buffer_type_t * b = get(cpu); b && *b; b++) out.push_back(*b);
    return out;
}

// Whether the CPU multiplies an [ne0, ne1] matrix of this type from buft, asked as
// llama.cpp asks it: a product over a placeholder buffer of that type.
bool packable(ggml_backend_buffer_type_t buft, ggml_type type, int64_t ne0, int64_t ne1) {
    ggml_init_params ip = {ggml_tensor_overhead() * 4, nullptr, true};
    std::unique_ptr<ggml_context, ggml_ctx_deleter> ctx(ggml_init(ip));
    if (!ctx) return false;
    ggml_tensor * w = ggml_new_tensor_2d(ctx.get(), type, ne0, ne1);
    ggml_tensor * x = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, ne0, 64);
    ggml_tensor * y = ggml_mul_mat(ctx.get(), w, x);
    ggml_backend_buffer_t placeholder = ggml_backend_buft_alloc_buffer(buft, 0);
    if (!placeholder) return false;
    w->buffer = placeholder;
    const bool ok = ggml_backend_dev_supports_op(ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU), y);
    ggml_backend_buffer_free(placeholder);
    return ok;
}

// Types the embedding lookup can read on every backend we use; others become F32.
bool embd_type_ok(ggml_type t) {
    switch (t) {
        case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16: case GGML_TYPE_Q8_0:
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1:
            return true;
        default:
            return false;
    }
}

} // namespace

static ggml_type compute_type(int ct) {
    switch (ct) {
        case CONCH_TRAIN_F16:  return GGML_TYPE_F16;
        case CONCH_TRAIN_BF16: return GGML_TYPE_BF16;
        case CONCH_TRAIN_Q8_0: return GGML_TYPE_Q8_0;
        case CONCH_TRAIN_BASE: return GGML_TYPE_COUNT;
        default:               return GGML_TYPE_F32;
    }
}

// The type of a frozen matrix's transpose (rows of n_out values), which only carries
// gradients back: f16 or bf16 like the matrix, else q8_0 (blocks of 32), else f16. Not
// the matrix's own 4-6 bit type: quantising the dequantised transpose again rounds
// twice, which measured 10-25% off in the gradients against 5% with q8_0.
static ggml_type transposed_type(ggml_type type, int64_t n_out) {
    if (type == GGML_TYPE_F16 || type == GGML_TYPE_BF16) return type;
    return n_out % 32 == 0 ? GGML_TYPE_Q8_0 : GGML_TYPE_F16;
}

void load_model(trainer & t) {
    const auto & hp = t.hp;
    t.wtype = compute_type(t.p.compute_type);
    t.scale = t.p.alpha / (float)t.p.rank;

    loader ld(t);
    ld.open();

    // Frozen tensors: 20 per layer at most, plus a few global ones.
    const size_t n_w = 16 + (size_t)hp.n_layer * 32;
    ggml_init_params ip = {ggml_tensor_overhead() * n_w, nullptr, /*no_alloc =*/ true};
    t.ctx_w = ggml_init(ip);
    if (!t.ctx_w) throw train_error("out of memory");

    // Frozen matrices. F32 (the reference): ggml's own backward of mul_mat, OUT_PROD,
    // which runs only on F32 everywhere. Other compute types: the matrix in that type for
    // the forward and its transpose for dX = W^T dY as a mul_mat (see train_graph.cpp),
    // which is faster and holds half the bytes or less per copy. With "base" each matrix
    // keeps its file type (an F32 one then goes the reference way).
    // The embedding is only looked up, so it may stay in its file type unless it doubles
    // as the output matrix.
    const bool base = t.wtype == GGML_TYPE_COUNT;
    auto lin = [&](const std::string & name) {
        ggml_tensor * s = ld.src(name);
        return base ? (s ? s->type : GGML_TYPE_F32) : t.wtype;
    };
    // On the CPU, a matrix held in a type the CPU's extra buffers take (q8_0, q4_0, q4_K)
    // goes to the first of them that multiplies it, as in llama.cpp: those matrices are
    // read only by the forward products (gradients take the transposes), which then run
    // up to twice as fast.
    if (t.wtype != GGML_TYPE_F32 && !t.gpu) {
        for (ggml_backend_buffer_type_t b : cpu_extra_bufts()) {
            ggml_init_params rp = {ggml_tensor_overhead() * n_w, nullptr, /*no_alloc =*/ true};
            trainer::packed pk;
            pk.buft = b;
            pk.ctx = ggml_init(rp);
            if (!pk.ctx) throw train_error("out of memory");
            t.packs.push_back(pk);
        }
    }
    // want() (in the first extra buffer that takes it, unless it is also looked up) and
    // its transpose when the matrix is held in a type other than F32.
    auto want_matrix = [&](const std::string & name, ggml_type type, ggml_tensor ** wt, bool lookup = false) {
        ggml_tensor * s = ld.src(name);
        ggml_context * pack = nullptr;
        for (size_t i = 0; s && !lookup && !pack && i < t.packs.size(); i++)
            if (packable(t.packs[i].buft, type, s->ne[0], s->ne[1])) pack = t.packs[i].ctx;
        ggml_tensor * w = ld.want(name, type, true, pack);
        if (w->type != GGML_TYPE_F32) *wt = ld.want_transposed(name, transposed_type(w->type, w->ne[1]));
        return w;
    };
    const bool tied = ld.src("output.weight") == nullptr;
    ggml_tensor * embd_src = ld.src("token_embd.weight");
    if (!embd_src) throw train_error("the model has no tensor token_embd.weight");
    // The CPU looks rows up in any type; on the GPU an embedding of another type (k-quants)
    // becomes F32, or q8_0 with "base".
    const ggml_type embd_fallback = base && hp.n_embd % 32 == 0 ? GGML_TYPE_Q8_0 : GGML_TYPE_F32;
    const ggml_type embd_file = !t.gpu || embd_type_ok(embd_src->type) ? embd_src->type : embd_fallback;
    if (tied) {
        t.tok_embd = want_matrix("token_embd.weight", base ? embd_file : t.wtype, &t.output_t, /*lookup =*/ true);
        t.output = t.tok_embd;
    } else {
        t.tok_embd = ld.want("token_embd.weight", embd_file, true);
        t.output = want_matrix("output.weight", lin("output.weight"), &t.output_t);
    }
    t.out_norm = ld.want("output_norm.weight", GGML_TYPE_F32, true);
    t.output_b = ld.want("output.bias", GGML_TYPE_F32, false);
    if (hp.arch == CONCH_TRAIN_LLAMA) t.rope_freqs = ld.want("rope_freqs.weight", GGML_TYPE_F32, false);

    t.layers.resize(hp.n_layer);
    for (int il = 0; il < hp.n_layer; il++) {
        auto & L = t.layers[il];
        auto nm = [&](const char * s, const char * suffix) { return "blk." + std::to_string(il) + "." + s + "." + suffix; };
        L.attn_norm = ld.want(nm("attn_norm", "weight"), GGML_TYPE_F32, true);
        L.ffn_norm  = ld.want(nm("ffn_norm", "weight"), GGML_TYPE_F32, true);
        for (int tg = 0; tg < T_COUNT; tg++) {
            const std::string name = nm(target_suffix(tg), "weight");
            L.w[tg] = want_matrix(name, lin(name), &L.wt[tg]);
        }
        L.bq = ld.want(nm("attn_q", "bias"), GGML_TYPE_F32, false);
        L.bk = ld.want(nm("attn_k", "bias"), GGML_TYPE_F32, false);
        L.bv = ld.want(nm("attn_v", "bias"), GGML_TYPE_F32, false);
        if (hp.arch == CONCH_TRAIN_LLAMA) {
            L.bo     = ld.want(nm("attn_output", "bias"), GGML_TYPE_F32, false);
            L.b_gate = ld.want(nm("ffn_gate", "bias"), GGML_TYPE_F32, false);
            L.b_up   = ld.want(nm("ffn_up", "bias"), GGML_TYPE_F32, false);
            L.b_down = ld.want(nm("ffn_down", "bias"), GGML_TYPE_F32, false);
        }
        if (hp.arch == CONCH_TRAIN_QWEN3) {
            L.q_norm = ld.want(nm("attn_q_norm", "weight"), GGML_TYPE_F32, true);
            L.k_norm = ld.want(nm("attn_k_norm", "weight"), GGML_TYPE_F32, true);
        }
    }

    // LoRA: A [n_in, r] and B [r, n_out] for every targeted projection, as llama.cpp's
    // adapter loader expects them; plus a gradient accumulator of the same shape each.
    const int r = t.p.rank;
    const bool out_lora = (t.p.targets & TARGET_OUTPUT_BIT) != 0;
    if (out_lora && tied) {
        // llama.cpp would apply a token_embd.weight pair to the embedding lookup as well.
        throw train_error("LoRA on lm_head needs a model with its own output.weight; this one ties it to token_embd.weight");
    }
    size_t n_pairs = 0;
    for (int tg = 0; tg < T_COUNT; tg++) if (t.p.targets & (1u << tg)) n_pairs++;
    n_pairs = n_pairs * hp.n_layer + (out_lora ? 1 : 0);
    ggml_init_params lp = {ggml_tensor_overhead() * (n_pairs * 4 + 4), nullptr, true};
    t.ctx_l = ggml_init(lp);
    if (!t.ctx_l) throw train_error("out of memory");
    auto add = [&](const std::string & name, int64_t ne0, int64_t ne1) {
        lora_tensor lt;
        lt.name = name;
        lt.w = ggml_new_tensor_2d(t.ctx_l, GGML_TYPE_F32, ne0, ne1);
        ggml_set_name(lt.w, lt.name.c_str());
        ggml_set_param(lt.w);
        lt.grad = ggml_new_tensor_2d(t.ctx_l, GGML_TYPE_F32, ne0, ne1);
        ggml_set_name(lt.grad, (lt.name + ".grad").c_str());
        const size_t n = (size_t)(ne0 * ne1);
        if (!t.measure) {
            lt.host.assign(n, 0.0f);
            lt.m.assign(n, 0.0f);
            lt.v.assign(n, 0.0f);
        }
        t.lora.push_back(std::move(lt));
        return (int)t.lora.size() - 1;
    };
    // A pair for base weight `base` of shape [n_in, n_out]. Like PEFT's
    // kaiming_uniform_(a=sqrt(5)): A ~ U(-1/sqrt(n_in), 1/sqrt(n_in)); B = 0. Each A has
    // its own random stream, keyed by its index.
    auto add_pair = [&](const std::string & base, int64_t n_in, int64_t n_out) {
        lora_pair pr;
        pr.a = add(base + ".lora_a", n_in, r);
        pr.b = add(base + ".lora_b", r, n_out);
        t.lora[pr.b].is_b = true;
        if (!t.measure) {
            auto & A = t.lora[pr.a];
            rng g{t.p.seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(pr.a + 1))};
            g.next();
            const float bound = 1.0f / std::sqrt((float)n_in);
            for (auto & x : A.host) x = (2.0f * g.uniform() - 1.0f) * bound;
        }
        return pr;
    };
    for (int il = 0; il < hp.n_layer; il++) {
        auto & L = t.layers[il];
        for (int tg = 0; tg < T_COUNT; tg++) {
            if (!(t.p.targets & (1u << tg))) continue;
            L.lora[tg] = add_pair("blk." + std::to_string(il) + "." + target_suffix(tg) + ".weight", L.w[tg]->ne[0], L.w[tg]->ne[1]);
            L.has_lora[tg] = true;
        }
    }
    if (out_lora) {
        t.out_lora = add_pair("output.weight", t.output->ne[0], t.output->ne[1]);
        t.has_out_lora = true;
    }

    if (t.measure) return;

    t.buf_w = ggml_backend_alloc_ctx_tensors(t.ctx_w, t.backend);
    if (!t.buf_w) throw train_error("out of memory for the frozen weights");
    ggml_backend_buffer_set_usage(t.buf_w, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    for (auto & pk : t.packs) {
        if (!ggml_get_first_tensor(pk.ctx)) continue;
        pk.buf = ggml_backend_alloc_ctx_tensors_from_buft(pk.ctx, pk.buft);
        if (!pk.buf) throw train_error("out of memory for the frozen weights");
        ggml_backend_buffer_set_usage(pk.buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    }
    t.buf_l = ggml_backend_alloc_ctx_tensors(t.ctx_l, t.backend);
    if (!t.buf_l) throw train_error("out of memory for the LoRA tensors");
    ggml_backend_buffer_clear(t.buf_l, 0);
    ld.fill();
    for (size_t i = 0; i < t.lora.size(); i++) upload_lora(t, (int)i);
}

} // namespace conch_train
