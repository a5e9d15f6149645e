// Folding LoRA adapters into a base model, W' = W + sum_i scale_i * (alpha_i / r_i) * B_i * A_i,
// and writing every tensor in the type the caller chose for it.
//
// The base is read a slice of rows at a time (pread), so memory stays near one slice plus
// the adapters, whatever the model size. A tensor that keeps its type and no adapter
// touches is copied byte for byte; any other is read as F32, merged, and converted with
// ggml_quantize_chunk, the routine llama.cpp's quantiser uses, so the bytes are the ones
// llama-quantize would write. With no adapters this is a plain conversion (requantising).
// Every key of the base (tokenizer, chat template, rope settings) is kept through
// gguf_set_kv, which is why we do not use llama_model_save_to_file. The caller (Go)
// chooses the types and validates shapes first; the checks here only turn what slipped
// through into an error instead of an abort.
#include "conch.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ggml.h"
#include "gguf.h"

void conch_set_error(const std::string & msg); // init.cpp

namespace {

struct gguf_deleter { void operator()(gguf_context * c) const { gguf_free(c); } };
struct ggml_deleter { void operator()(ggml_context * c) const { ggml_free(c); } };
using gguf_ptr = std::unique_ptr<gguf_context, gguf_deleter>;
using ggml_ptr = std::unique_ptr<ggml_context, ggml_deleter>;

struct fd_closer {
    int fd = -1;
    ~fd_closer() { if (fd >= 0) close(fd); }
};

[[noreturn]] void fail(const std::string & msg) { throw std::runtime_error(msg); }

std::string errno_text(int e) {
    if (e == ENOSPC) return "no space left on device";
    if (e == EFBIG) return "file too large (disk quota or size limit)";
    if (e == EDQUOT) return "disk quota exceeded";
    return strerror(e);
}

// to_f32 converts n values of type t to F32.
void to_f32(ggml_type t, const void * src, float * dst, int64_t n) {
    if (t == GGML_TYPE_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    const auto * tr = ggml_get_type_traits(t);
    if (!tr->to_float) fail(std::string("cannot dequantise tensor type ") + ggml_type_name(t));
    tr->to_float(src, dst, n);
}

// One adapter: its metadata and tensors (adapters are small: they are loaded whole).
struct lora {
    std::string path;
    float user_scale = 1;
    float alpha = 0;
    gguf_ptr meta;
    ggml_ptr data;
};

// The A and B of one adapter for one base weight, in F32.
struct pair_f32 {
    std::vector<float> a, b;
    int64_t r = 0;
    float scale = 0; // user scale * alpha / r, as llama.cpp computes it at run time
};

std::vector<float> tensor_f32(const ggml_tensor * t) {
    std::vector<float> out(ggml_nelements(t));
    to_f32(t->type, t->data, out.data(), out.size());
    return out;
}

// parallel_rows runs fn(row_begin, row_end) over n rows on up to n_threads threads.
template <typename F>
void parallel_rows(int64_t n, int n_threads, F fn) {
    int nt = std::max(1, std::min<int>(n_threads, (int) std::min<int64_t>(n, 64)));
    if (nt == 1 || n < 64) {
        fn(0, n);
        return;
    }
    std::vector<std::thread> th;
    int64_t per = (n + nt - 1) / nt;
    for (int i = 0; i < nt; i++) {
        int64_t lo = i * per, hi = std::min(n, lo + per);
        if (lo >= hi) break;
        th.emplace_back([=] { fn(lo, hi); });
    }
    for (auto & t : th) t.join();
}

// add_delta adds p.scale * B * A to rows [o0, o0 + n) of a weight of n_in values per row
// (ggml order), held in w from row o0 on. A is [n_in, r] (r rows of n_in), B is [r, n_out]
// (n_out rows of r). Rows are independent, so a weight can be merged a slice at a time.
void add_delta(float * w, int64_t n_in, int64_t o0, int64_t n, const pair_f32 & p, int n_threads) {
    const float * A = p.a.data();
    const float * B = p.b.data();
    const int64_t r = p.r;
    const float s = p.scale;
    parallel_rows(n, n_threads, [&](int64_t lo, int64_t hi) {
        for (int64_t j = lo; j < hi; j++) {
            const int64_t o = o0 + j;
            float * row = w + j * n_in;
            for (int64_t k = 0; k < r; k++) {
                const float c = s * B[o * r + k];
                const float * arow = A + k * n_in;
                for (int64_t i = 0; i < n_in; i++) row[i] += c * arow[i];
            }
        }
    });
}

// add_delta_embd is add_delta for token_embd.weight, whose pair llama.cpp stores flipped:
// A is [r, n_vocab] (one row of r per token) and B is [r, n_embd].
void add_delta_embd(float * w, int64_t n_embd, int64_t t0, int64_t n, const pair_f32 & p, int n_threads) {
    const float * A = p.a.data();
    const float * B = p.b.data();
    const int64_t r = p.r;
    const float s = p.scale;
    parallel_rows(n, n_threads, [&](int64_t lo, int64_t hi) {
        for (int64_t j = lo; j < hi; j++) {
            float * row = w + j * n_embd;
            const float * at = A + (t0 + j) * r;
            for (int64_t e = 0; e < n_embd; e++) {
                const float * be = B + e * r;
                float acc = 0;
                for (int64_t k = 0; k < r; k++) acc += at[k] * be[k];
                row[e] += s * acc;
            }
        }
    });
}

// copy_kv copies key src_id of src into dst under a new name, with its exact type.
void copy_kv(gguf_context * dst, const std::string & key, const gguf_context * src, int64_t id) {
    const char * k = key.c_str();
    switch (gguf_get_kv_type(src, id)) {
        case GGUF_TYPE_UINT8:   gguf_set_val_u8  (dst, k, gguf_get_val_u8  (src, id)); break;
        case GGUF_TYPE_INT8:    gguf_set_val_i8  (dst, k, gguf_get_val_i8  (src, id)); break;
        case GGUF_TYPE_UINT16:  gguf_set_val_u16 (dst, k, gguf_get_val_u16 (src, id)); break;
        case GGUF_TYPE_INT16:   gguf_set_val_i16 (dst, k, gguf_get_val_i16 (src, id)); break;
        case GGUF_TYPE_UINT32:  gguf_set_val_u32 (dst, k, gguf_get_val_u32 (src, id)); break;
        case GGUF_TYPE_INT32:   gguf_set_val_i32 (dst, k, gguf_get_val_i32 (src, id)); break;
        case GGUF_TYPE_FLOAT32: gguf_set_val_f32 (dst, k, gguf_get_val_f32 (src, id)); break;
        case GGUF_TYPE_UINT64:  gguf_set_val_u64 (dst, k, gguf_get_val_u64 (src, id)); break;
        case GGUF_TYPE_INT64:   gguf_set_val_i64 (dst, k, gguf_get_val_i64 (src, id)); break;
        case GGUF_TYPE_FLOAT64: gguf_set_val_f64 (dst, k, gguf_get_val_f64 (src, id)); break;
        case GGUF_TYPE_BOOL:    gguf_set_val_bool(dst, k, gguf_get_val_bool(src, id)); break;
        case GGUF_TYPE_STRING:  gguf_set_val_str (dst, k, gguf_get_val_str (src, id)); break;
        case GGUF_TYPE_ARRAY: {
            const enum gguf_type at = gguf_get_arr_type(src, id);
            const size_t n = gguf_get_arr_n(src, id);
            if (at == GGUF_TYPE_STRING) {
                std::vector<const char *> v(n);
                for (size_t i = 0; i < n; i++) v[i] = gguf_get_arr_str(src, id, i);
                gguf_set_arr_str(dst, k, v.data(), n);
            } else if (at != GGUF_TYPE_ARRAY) {
                gguf_set_arr_data(dst, k, at, gguf_get_arr_data(src, id), n);
            }
        } break;
        default: break;
    }
}

bool has_prefix(const char * s, const char * p) { return strncmp(s, p, strlen(p)) == 0; }

// Keys an adapter file carries about itself rather than about its training: these are
// recorded explicitly (alpha) or are meaningless in a merged model.
bool adapter_structural_key(const char * k) {
    return !strcmp(k, "general.architecture") || !strcmp(k, "general.type") ||
           !strcmp(k, "general.file_type") || !strcmp(k, "general.quantization_version") ||
           !strcmp(k, "general.alignment") || !strcmp(k, "adapter.type") || !strcmp(k, "adapter.lora.alpha");
}

class writer {
public:
    explicit writer(const char * path) {
        f_ = fopen(path, "wb");
        if (!f_) fail(std::string("create ") + path + ": " + errno_text(errno));
        buf_.resize(8 << 20);
        setvbuf(f_, buf_.data(), _IOFBF, buf_.size());
    }
    ~writer() { if (f_) fclose(f_); }
    void write(const void * p, size_t n) {
        if (n && fwrite(p, 1, n, f_) != n) fail("write: " + errno_text(errno));
        pos_ += n;
    }
    void pad(size_t align) {
        static const char zeros[64] = {};
        while (pos_ % align) write(zeros, std::min(sizeof(zeros), align - pos_ % align));
    }
    void finish() {
        if (fflush(f_) != 0) fail("write: " + errno_text(errno));
        if (fsync(fileno(f_)) != 0) fail("sync: " + errno_text(errno));
        FILE * f = f_;
        f_ = nullptr;
        if (fclose(f) != 0) fail("close: " + errno_text(errno));
    }
    size_t pos() const { return pos_; }
private:
    FILE * f_ = nullptr;
    size_t pos_ = 0;
    std::vector<char> buf_;
};

void read_at(int fd, void * dst, size_t n, size_t off, const char * path) {
    char * p = (char *) dst;
    while (n > 0) {
        ssize_t got = pread(fd, p, n, (off_t) off);
        if (got < 0) {
            if (errno == EINTR) continue;
            fail(std::string("read ") + path + ": " + strerror(errno));
        }
        if (got == 0) fail(std::string(path) + ": file is truncated");
        p += got;
        n -= (size_t) got;
        off += (size_t) got;
    }
}

bool cancelled(const conch_merge_progress * pr) { return pr && __atomic_load_n(&pr->cancel, __ATOMIC_RELAXED); }

void do_merge(const conch_merge_params * p) {
    if (!p || !p->base_path || !p->out_path) fail("merge: missing paths");
    const int n_threads = p->n_threads > 0 ? p->n_threads : (int) std::max(1u, std::thread::hardware_concurrency());

    // The base: metadata and tensor infos only.
    ggml_context * base_meta_raw = nullptr;
    gguf_ptr base(gguf_init_from_file(p->base_path, {/*no_alloc=*/true, &base_meta_raw}));
    ggml_ptr base_meta(base_meta_raw);
    if (!base) fail(std::string(p->base_path) + ": not a readable GGUF file");
    const int64_t kid_arch = gguf_find_key(base.get(), "general.architecture");
    const std::string arch = kid_arch >= 0 && gguf_get_kv_type(base.get(), kid_arch) == GGUF_TYPE_STRING
        ? gguf_get_val_str(base.get(), kid_arch) : "";

    // The adapters, whole.
    std::vector<lora> loras(p->n_loras);
    for (int i = 0; i < p->n_loras; i++) {
        lora & l = loras[i];
        l.path = p->loras[i].path ? p->loras[i].path : "";
        l.user_scale = p->loras[i].scale;
        ggml_context * d = nullptr;
        l.meta.reset(gguf_init_from_file(l.path.c_str(), {/*no_alloc=*/false, &d}));
        l.data.reset(d);
        if (!l.meta) fail(l.path + ": not a readable GGUF file");
        int64_t k = gguf_find_key(l.meta.get(), "general.type");
        if (k < 0 || gguf_get_kv_type(l.meta.get(), k) != GGUF_TYPE_STRING || strcmp(gguf_get_val_str(l.meta.get(), k), "adapter") != 0)
            fail(l.path + ": not a LoRA adapter");
        k = gguf_find_key(l.meta.get(), "general.architecture");
        if (k < 0 || gguf_get_kv_type(l.meta.get(), k) != GGUF_TYPE_STRING || arch != gguf_get_val_str(l.meta.get(), k))
            fail(l.path + ": adapter is for another architecture than the base (" + arch + ")");
        k = gguf_find_key(l.meta.get(), "adapter.lora.alpha");
        if (k >= 0 && gguf_get_kv_type(l.meta.get(), k) == GGUF_TYPE_FLOAT32) l.alpha = gguf_get_val_f32(l.meta.get(), k);
    }

    // Which base tensors each adapter touches.
    struct ab { const ggml_tensor * a = nullptr; const ggml_tensor * b = nullptr; };
    std::vector<std::unordered_map<std::string, ab>> touches(loras.size());
    for (size_t i = 0; i < loras.size(); i++) {
        // Walk the file's tensor list: the data context also holds gguf's own blob tensor.
        const gguf_context * am = loras[i].meta.get();
        for (int64_t ti = 0; ti < gguf_get_n_tensors(am); ti++) {
            std::string name = gguf_get_tensor_name(am, ti);
            const ggml_tensor * t = ggml_get_tensor(loras[i].data.get(), name.c_str());
            if (!t) fail(loras[i].path + ": cannot read tensor " + name);
            auto cut = [&](const char * suf) {
                size_t n = strlen(suf);
                return name.size() > n && name.compare(name.size() - n, n, suf) == 0 ? name.substr(0, name.size() - n) : std::string();
            };
            std::string w = cut(".lora_a");
            if (!w.empty()) { touches[i][w].a = t; continue; }
            w = cut(".lora_b");
            if (!w.empty()) { touches[i][w].b = t; continue; }
            fail(loras[i].path + ": unexpected tensor " + name);
        }
        for (auto & [w, pr] : touches[i]) {
            if (!pr.a || !pr.b) fail(loras[i].path + ": " + w + " lacks its lora_a or lora_b");
            const ggml_tensor * bt = ggml_get_tensor(base_meta.get(), w.c_str());
            if (!bt) fail(loras[i].path + ": the base has no weight " + w + " (adapter made for another model?)");
            if (ggml_n_dims(pr.a) > 2 || ggml_n_dims(pr.b) > 2 || bt->ne[2] != 1 || bt->ne[3] != 1)
                fail(loras[i].path + ": " + w + ": only 2-D weights can be merged");
            const bool embd = w.size() >= 17 && w.compare(w.size() - 17, 17, "token_embd.weight") == 0;
            const bool ok = embd
                ? bt->ne[0] == pr.b->ne[1] && bt->ne[1] == pr.a->ne[1] && pr.a->ne[0] == pr.b->ne[0]
                : bt->ne[0] == pr.a->ne[0] && bt->ne[1] == pr.b->ne[1] && pr.a->ne[1] == pr.b->ne[0];
            if (!ok) fail(loras[i].path + ": " + w + ": adapter shapes do not match the base weight (made for another model?)");
            if (pr.a->type != GGML_TYPE_F32 && !ggml_get_type_traits(pr.a->type)->to_float) fail(loras[i].path + ": unsupported tensor type");
            if (pr.b->type != GGML_TYPE_F32 && !ggml_get_type_traits(pr.b->type)->to_float) fail(loras[i].path + ": unsupported tensor type");
            if (bt->type != GGML_TYPE_F32 && !ggml_get_type_traits(bt->type)->to_float)
                fail(w + ": cannot dequantise base type " + ggml_type_name(bt->type));
        }
    }

    // The output: every base key, minus an earlier merge's record when this is a merge,
    // plus ours.
    gguf_ptr out(gguf_init_empty());
    gguf_set_kv(out.get(), base.get());
    {
        // gguf_set_kv copies general.alignment but the writer pads with its own (default)
        // alignment; keep them consistent by dropping a non-default value.
        int64_t k = gguf_find_key(out.get(), "general.alignment");
        if (k >= 0 && (gguf_get_kv_type(out.get(), k) != GGUF_TYPE_UINT32 || gguf_get_val_u32(out.get(), k) != gguf_get_alignment(out.get())))
            gguf_remove_key(out.get(), "general.alignment");
        std::vector<std::string> stale;
        for (int64_t i = 0; p->n_loras > 0 && i < gguf_get_n_kv(out.get()); i++)
            if (has_prefix(gguf_get_key(out.get(), i), "conch.merge.")) stale.push_back(gguf_get_key(out.get(), i));
        for (auto & s : stale) gguf_remove_key(out.get(), s.c_str());
    }
    for (int i = 0; i < p->n_kvs; i++) {
        const conch_merge_kv & kv = p->kvs[i];
        if (!kv.key) continue;
        switch (kv.type) {
            case 0: gguf_set_val_str(out.get(), kv.key, kv.str ? kv.str : ""); break;
            case 1: gguf_set_val_u32(out.get(), kv.key, kv.u32); break;
            case 2: gguf_set_val_f32(out.get(), kv.key, kv.f32); break;
            default: fail("merge: bad metadata type");
        }
    }
    // What each adapter records about its training, under conch.merge.lora.<i>.
    for (size_t i = 0; i < loras.size(); i++) {
        const gguf_context * m = loras[i].meta.get();
        for (int64_t k = 0; k < gguf_get_n_kv(m); k++) {
            const char * key = gguf_get_key(m, k);
            if (adapter_structural_key(key)) continue;
            const char * rest = has_prefix(key, "conch.") ? key + 6 : key;
            copy_kv(out.get(), "conch.merge.lora." + std::to_string(i) + "." + rest, m, k);
        }
    }

    // Tensor infos with their output types.
    const int64_t n_tensors = gguf_get_n_tensors(base.get());
    if (p->n_tensor_types != n_tensors || !p->tensor_types) fail("merge: the output types do not match the base's tensors");
    std::vector<bool> merged(n_tensors, false);
    std::vector<ggml_type> out_type(n_tensors);
    bool any_quantized = false;
    for (int64_t i = 0; i < n_tensors; i++) {
        const char * name = gguf_get_tensor_name(base.get(), i);
        const ggml_tensor * t = ggml_get_tensor(base_meta.get(), name);
        for (auto & m : touches) if (m.count(name)) merged[i] = true;
        const int32_t ot = p->tensor_types[i];
        if (ot < 0 || ot >= GGML_TYPE_COUNT || ggml_blck_size((ggml_type) ot) <= 0 || ggml_type_size((ggml_type) ot) == 0)
            fail(std::string(name) + ": bad output type");
        out_type[i] = (ggml_type) ot;
        if (out_type[i] != t->type || merged[i]) {
            // Converted through F32: the row must fill whole blocks, the source must be
            // readable as F32, and no importance matrix can be needed.
            if (t->ne[0] % ggml_blck_size(out_type[i]) != 0)
                fail(std::string(name) + ": rows of " + std::to_string(t->ne[0]) + " values do not fit " + ggml_type_name(out_type[i]));
            if (ggml_quantize_requires_imatrix(out_type[i]))
                fail(std::string(name) + ": " + ggml_type_name(out_type[i]) + " needs an importance matrix");
            if (t->type != GGML_TYPE_F32 && !ggml_get_type_traits(t->type)->to_float)
                fail(std::string(name) + ": cannot convert from " + ggml_type_name(t->type));
        }
        any_quantized = any_quantized || ggml_is_quantized(out_type[i]);
        gguf_add_tensor(out.get(), t);
        if (out_type[i] != t->type) gguf_set_tensor_type(out.get(), name, out_type[i]);
    }
    // As llama.cpp's quantiser records them.
    if (p->file_type >= 0) gguf_set_val_u32(out.get(), "general.file_type", (uint32_t) p->file_type);
    if (any_quantized) gguf_set_val_u32(out.get(), "general.quantization_version", GGML_QNT_VERSION);

    if (p->progress) {
        __atomic_store_n(&p->progress->total, (int32_t) n_tensors, __ATOMIC_RELAXED);
        __atomic_store_n(&p->progress->done, 0, __ATOMIC_RELAXED);
    }

    fd_closer in;
    in.fd = open(p->base_path, O_RDONLY);
    if (in.fd < 0) fail(std::string("open ") + p->base_path + ": " + strerror(errno));
    const size_t data_off = gguf_get_data_offset(base.get());
    const size_t align = gguf_get_alignment(out.get());

    writer w(p->out_path);
    {
        std::vector<char> meta(gguf_get_meta_size(out.get()));
        gguf_get_meta_data(out.get(), meta.data());
        w.write(meta.data(), meta.size());
    }
    const size_t data_start = w.pos();

    // A slice of about this many values is converted at a time: rows are independent for
    // the merge and for every ggml type, so the result does not depend on the slicing.
    const int64_t slice_values = p->slice_values > 0 ? p->slice_values : 8 << 20;
    std::vector<char> copy_buf;
    std::vector<char> raw;
    std::vector<float> f32;
    std::vector<char> conv;
    for (int64_t i = 0; i < n_tensors; i++) {
        if (cancelled(p->progress)) fail("cancelled");
        const char * name = gguf_get_tensor_name(base.get(), i);
        const ggml_tensor * t = ggml_get_tensor(base_meta.get(), name);
        const size_t src_off = data_off + gguf_get_tensor_offset(base.get(), i);
        const size_t nbytes = ggml_nbytes(t);
        if (w.pos() - data_start != gguf_get_tensor_offset(out.get(), i)) fail("merge: internal offset mismatch");
        const ggml_type ot = out_type[i];

        if (!merged[i] && ot == t->type) {
            // Byte for byte, in chunks: untouched tensors never need a whole-tensor buffer.
            copy_buf.resize(std::min<size_t>(nbytes, 16 << 20));
            for (size_t done = 0; done < nbytes;) {
                size_t n = std::min(copy_buf.size(), nbytes - done);
                read_at(in.fd, copy_buf.data(), n, src_off + done, p->base_path);
                w.write(copy_buf.data(), n);
                done += n;
            }
        } else {
            const int64_t n_per_row = t->ne[0];
            const int64_t n_rows = ggml_nelements(t) / n_per_row;
            const size_t in_row = ggml_row_size(t->type, n_per_row);
            const size_t out_row = ggml_row_size(ot, n_per_row);
            const bool embd = strlen(name) >= 17 && strcmp(name + strlen(name) - 17, "token_embd.weight") == 0;
            // The adapters' pairs for this weight, in F32, for every slice.
            std::vector<pair_f32> pairs;
            for (size_t li = 0; merged[i] && li < loras.size(); li++) {
                auto it = touches[li].find(name);
                if (it == touches[li].end()) continue;
                pair_f32 pr;
                pr.a = tensor_f32(it->second.a);
                pr.b = tensor_f32(it->second.b);
                pr.r = it->second.b->ne[0];
                // llama.cpp: alpha ? scale * alpha / rank : scale
                pr.scale = loras[li].alpha != 0 ? loras[li].user_scale * loras[li].alpha / (float) pr.r : loras[li].user_scale;
                pairs.push_back(std::move(pr));
            }
            const int64_t slice_rows = std::max<int64_t>(1, slice_values / n_per_row);
            for (int64_t r0 = 0; r0 < n_rows; r0 += slice_rows) {
                if (cancelled(p->progress)) fail("cancelled");
                const int64_t n = std::min(slice_rows, n_rows - r0);
                raw.resize(n * in_row);
                read_at(in.fd, raw.data(), raw.size(), src_off + r0 * in_row, p->base_path);
                f32.resize(n * n_per_row);
                parallel_rows(n, n_threads, [&](int64_t lo, int64_t hi) {
                    to_f32(t->type, raw.data() + lo * in_row, f32.data() + lo * n_per_row, (hi - lo) * n_per_row);
                });
                for (const auto & pr : pairs) {
                    if (embd) add_delta_embd(f32.data(), n_per_row, r0, n, pr, n_threads);
                    else add_delta(f32.data(), n_per_row, r0, n, pr, n_threads);
                }
                if (!pairs.empty()) {
                    for (float v : f32) {
                        if (!std::isfinite(v)) fail(std::string(name) + ": the merged weight is not finite (adapter values too large?)");
                    }
                }
                if (ot == GGML_TYPE_F32) {
                    w.write(f32.data(), f32.size() * sizeof(float));
                    continue;
                }
                conv.resize(n * out_row);
                parallel_rows(n, n_threads, [&](int64_t lo, int64_t hi) {
                    ggml_quantize_chunk(ot, f32.data(), conv.data(), lo * n_per_row, hi - lo, n_per_row, nullptr);
                });
                // As llama.cpp does: a non-finite value or scale makes the model useless.
                if (!ggml_validate_row_data(ot, conv.data(), conv.size()))
                    fail(std::string(name) + ": values out of the range of " + ggml_type_name(ot) + " (not finite after conversion)");
                w.write(conv.data(), conv.size());
            }
            // A row longer than a slice made the buffers as large as the row: give them back.
            if (f32.capacity() > (size_t) slice_values) { std::vector<float>().swap(f32); std::vector<char>().swap(conv); std::vector<char>().swap(raw); }
        }
        w.pad(align);
        if (p->progress) __atomic_store_n(&p->progress->done, (int32_t) (i + 1), __ATOMIC_RELAXED);
    }
    w.finish();
}

} // namespace

extern "C" int conch_merge(const struct conch_merge_params * p) {
    try {
        do_merge(p);
        return 0;
    } catch (const std::exception & e) {
        conch_set_error(e.what());
        return 1;
    }
}
