// The training graphs: llama.cpp's llama / qwen2 / qwen3 forward rebuilt on the public
// ggml API with LoRA on the projections, the loss on supervised rows only, and ggml's
// automatic backward pass into our own gradient accumulators; in one graph, or with
// gradient checkpointing one for the forward pass, the head and each layer.
#include "train.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

namespace conch_train {

// Upper bound on graph nodes: about 90 forward and 300 backward nodes per layer.
size_t graph_nodes_max(const trainer & t) { return 512 + (size_t)t.hp.n_layer * 640; }

namespace {

struct builder {
    trainer & t;
    ggml_context * ctx;
    int T;

    // y = W x + scale * B (A x). The scale goes on the rank-r product, the cheapest place.
    ggml_tensor * lora_mm(ggml_tensor * w, const lora_pair * pr, ggml_tensor * x) {
        ggml_tensor * y = ggml_mul_mat(ctx, w, x);
        if (pr) {
            ggml_tensor * ax = ggml_mul_mat(ctx, t.lora[pr->a].w, x);
            ax = ggml_scale(ctx, ax, t.scale);
            y = ggml_add(ctx, y, ggml_mul_mat(ctx, t.lora[pr->b].w, ax));
        }
        return y;
    }

    ggml_tensor * proj(const layer & L, int tg, ggml_tensor * x) {
        return lora_mm(L.w[tg], L.has_lora[tg] ? &L.lora[tg] : nullptr, x);
    }

    // The output head on rows of the final hidden state, with its LoRA if trained.
    ggml_tensor * head(ggml_tensor * h) {
        ggml_tensor * logits = lora_mm(t.output, t.has_out_lora ? &t.out_lora : nullptr, h);
        if (t.output_b) logits = ggml_add(ctx, logits, t.output_b);
        return logits;
    }

    ggml_tensor * norm(ggml_tensor * x, ggml_tensor * w) {
        return ggml_mul(ctx, ggml_rms_norm(ctx, x, t.hp.rms_eps), w);
    }

    ggml_tensor * rope(ggml_tensor * x, ggml_tensor * pos) {
        const auto & hp = t.hp;
        return ggml_rope_ext(ctx, x, pos, t.rope_freqs, hp.head_dim, hp.rope_mode, hp.n_ctx_orig,
                             hp.rope_freq_base, hp.rope_freq_scale, /*ext_factor =*/ 0.0f,
                             hp.rope_attn_factor, /*beta_fast =*/ 32.0f, /*beta_slow =*/ 1.0f);
    }

    ggml_tensor * layer_fwd(const layer & L, ggml_tensor * x, ggml_tensor * pos, ggml_tensor * mask) {
        const auto & hp = t.hp;
        const int hd = hp.head_dim;
        ggml_tensor * cur = norm(x, L.attn_norm);

        ggml_tensor * q = proj(L, T_Q, cur);
        if (L.bq) q = ggml_add(ctx, q, L.bq);
        ggml_tensor * k = proj(L, T_K, cur);
        if (L.bk) k = ggml_add(ctx, k, L.bk);
        ggml_tensor * v = proj(L, T_V, cur);
        if (L.bv) v = ggml_add(ctx, v, L.bv);

        q = ggml_reshape_3d(ctx, q, hd, hp.n_head, T);
        k = ggml_reshape_3d(ctx, k, hd, hp.n_head_kv, T);
        v = ggml_reshape_3d(ctx, v, hd, hp.n_head_kv, T);
        if (L.q_norm) q = norm(q, L.q_norm);
        if (L.k_norm) k = norm(k, L.k_norm);
        q = rope(q, pos);
        k = rope(k, pos);

        // Attention without flash attention (it has no backward): [hd, T, heads] views,
        // K·Q with GQA broadcast, masked softmax, then V (stored transposed) times the scores.
        q = ggml_cont(ctx, ggml_permute(ctx, q, 0, 2, 1, 3));
        k = ggml_permute(ctx, k, 0, 2, 1, 3);
        ggml_tensor * kq = ggml_mul_mat(ctx, k, q);                       // [T_k, T_q, n_head]
        kq = ggml_soft_max_ext(ctx, kq, mask, hp.kq_scale, 0.0f);
        ggml_tensor * vt = ggml_cont(ctx, ggml_permute(ctx, v, 1, 2, 0, 3)); // [T, hd, n_head_kv]
        ggml_tensor * kqv = ggml_mul_mat(ctx, vt, kq);                    // [hd, T_q, n_head]
        cur = ggml_permute(ctx, kqv, 0, 2, 1, 3);                         // [hd, n_head, T]
        cur = ggml_cont_2d(ctx, cur, hd * hp.n_head, T);

        cur = proj(L, T_O, cur);
        if (L.bo) cur = ggml_add(ctx, cur, L.bo);
        ggml_tensor * ffn_in = ggml_add(ctx, cur, x);

        cur = norm(ffn_in, L.ffn_norm);
        ggml_tensor * up = proj(L, T_UP, cur);
        if (L.b_up) up = ggml_add(ctx, up, L.b_up);
        ggml_tensor * gate = proj(L, T_GATE, cur);
        if (L.b_gate) gate = ggml_add(ctx, gate, L.b_gate);
        cur = ggml_swiglu_split(ctx, gate, up);
        cur = proj(L, T_DOWN, cur);
        if (L.b_down) cur = ggml_add(ctx, cur, L.b_down);
        return ggml_add(ctx, cur, ffn_in);
    }
};

// ggml differentiates y = mul_mat(W, x) into dx = out_prod(W, transpose(dy)), which
// needs an F32 W (and is slow even then). With a transposed copy Wt of every frozen
// matrix the same product is mul_mat(Wt, dy): rewrite those nodes in place. Their shape
// is the same, so nothing else in the graph changes.
void use_transposed_weights(trainer & t, ggml_context * ctx, ggml_cgraph * g) {
    std::unordered_map<const ggml_tensor *, ggml_tensor *> wt; // matrices held with a transpose
    for (auto & L : t.layers)
        for (int tg = 0; tg < T_COUNT; tg++)
            if (L.wt[tg]) wt[L.w[tg]] = L.wt[tg];
    if (t.output_t) wt[t.output] = t.output_t;
    if (wt.empty()) return;
    for (int i = 0; i < ggml_graph_n_nodes(g); i++) {
        ggml_tensor * node = ggml_graph_node(g, i);
        if (node->op != GGML_OP_OUT_PROD) continue;
        auto it = wt.find(node->src[0]);
        if (it == wt.end()) continue;
        ggml_tensor * tr = node->src[1];
        if (tr->op != GGML_OP_TRANSPOSE || !ggml_is_contiguous(tr->src[0]) || tr->src[0]->ne[0] != it->second->ne[0]) {
            throw train_error(std::string("unexpected backward graph at ") + ggml_get_name(node->src[0]));
        }
        // The transpose view existed only for this product: turn it into a plain view
        // of dY and feed it to the new product, so that the allocator still sees dY
        // consumed (an orphaned view would keep dY alive to the end of the graph).
        ggml_tensor * dy = tr->src[0];
        for (int d = 0; d < GGML_MAX_DIMS; d++) {
            tr->ne[d] = dy->ne[d];
            tr->nb[d] = dy->nb[d];
        }
        tr->op = GGML_OP_RESHAPE;
        ggml_tensor * mm = ggml_mul_mat(ctx, it->second, tr);
        if (!ggml_are_same_shape(mm, node)) throw train_error(std::string("unexpected gradient shape at ") + ggml_get_name(node->src[0]));
        node->op = GGML_OP_MUL_MAT;
        memcpy(node->op_params, mm->op_params, sizeof(node->op_params));
        node->src[0] = it->second;
        node->src[1] = tr;
    }
}

// Rewrites a graph's nodes in place, putting new nodes just before the node that needs
// them (a graph's node order is its execution order).
struct rewriter {
    ggml_cgraph * g;
    std::vector<ggml_tensor *> order;
    int room, added = 0;

    explicit rewriter(ggml_cgraph * g) : g(g), room(ggml_graph_size(g) - ggml_graph_n_nodes(g)) {
        order.reserve(ggml_graph_n_nodes(g) + 64);
    }
    bool fits(int n) const { return added + n <= room; }
    ggml_tensor * add(ggml_tensor * x) {
        order.push_back(x);
        added++;
        return x;
    }
    void keep(ggml_tensor * x) { order.push_back(x); }
    void commit() {
        for (int k = 0; k < added; k++) ggml_graph_add_node(g, order[0]); // grow n_nodes
        ggml_tensor ** nodes = ggml_graph_nodes(g);
        for (size_t k = 0; k < order.size(); k++) nodes[k] = order[k];
    }
};

// Turns node into the op of `like` (same shape) over new sources.
void become(ggml_tensor * node, const ggml_tensor * like, ggml_tensor * src0, ggml_tensor * src1) {
    if (!ggml_are_same_shape(like, node)) throw train_error("unexpected shape in the training graph");
    node->op = like->op;
    memcpy(node->op_params, like->op_params, sizeof(node->op_params));
    node->src[0] = src0;
    node->src[1] = src1;
}

// The remaining OUT_PRODs (attention and LoRA gradients) run several times slower on the
// CPU than a matrix product of the same size, and out_prod(a, b) = mul_mat(aᵀ, bᵀ). An
// operand that ggml built as a transpose view of a contiguous gradient is used untransposed
// (the view is turned into a plain one, see use_transposed_weights); others are copied
// transposed, which pays off only when the product does many operations per copied value
// (attention and Bᵀ·dY: yes; dB = (A·x)·dYᵀ: no), and only when the contracted dimension
// is long enough for the matrix product's dot products (not A·d(A·x), over the rank).
// Stored weights other than the LoRA tensors are left alone (f32 mode's frozen matrices:
// copying them would cost more).
void out_prods_as_mul_mats(ggml_context * ctx, ggml_cgraph * g, const std::unordered_set<const ggml_tensor *> & small) {
    const int n = ggml_graph_n_nodes(g);
    ggml_tensor ** nodes = ggml_graph_nodes(g);
    std::unordered_map<const ggml_tensor *, int> uses;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < GGML_MAX_SRC; j++)
            if (nodes[i]->src[j]) uses[nodes[i]->src[j]]++;
    auto plain_transpose = [&](const ggml_tensor * x) {
        return x->op == GGML_OP_TRANSPOSE && uses[x] == 1 && ggml_is_contiguous(x->src[0]);
    };

    rewriter rw(g);
    for (int i = 0; i < n; i++) {
        ggml_tensor * node = nodes[i];
        ggml_tensor * a = node->src[0], * b = node->src[1];
        if (node->op != GGML_OP_OUT_PROD || (a->op == GGML_OP_NONE && !small.count(a)) || a->type != GGML_TYPE_F32 ||
            b->type != GGML_TYPE_F32 || a->ne[1] < 32 || !rw.fits(4)) {
            rw.keep(node);
            continue;
        }
        const bool a_view = plain_transpose(a), b_view = plain_transpose(b);
        const double flops = 2.0 * (double)node->ne[0] * (double)node->ne[1] * (double)a->ne[1] * (double)(node->ne[2] * node->ne[3]);
        const double copied = (a_view ? 0.0 : (double)ggml_nelements(a)) + (b_view ? 0.0 : (double)ggml_nelements(b));
        if (flops < 64.0 * copied) {
            rw.keep(node);
            continue;
        }
        auto operand = [&](ggml_tensor * x, bool view) {
            if (view) {
                ggml_tensor * src = x->src[0];
                for (int d = 0; d < GGML_MAX_DIMS; d++) {
                    x->ne[d] = src->ne[d];
                    x->nb[d] = src->nb[d];
                }
                x->op = GGML_OP_RESHAPE;
                return x;
            }
            return rw.add(ggml_cont(ctx, rw.add(ggml_transpose(ctx, x))));
        };
        ggml_tensor * at = operand(a, a_view);
        ggml_tensor * bt = operand(b, b_view);
        become(node, ggml_mul_mat(ctx, at, bt), at, bt);
        rw.keep(node);
    }
    rw.commit();
}

// The CPU runs a matrix product as dot products along the contracted dimension and
// OUT_PROD as scaled vector additions along its output rows, so both idle when that
// dimension is a LoRA rank (a few values to a vector 8 wide, then a horizontal sum per
// result). Measured 2.5-5x slower than the other of the two for r < 32. Once the
// backward pass exists (OUT_PROD has no derivative; backward nodes only read a product's
// inputs), these run the other way round:
//   forward B·(A·x), a product over r:   out_prod(Bᵀ, (A·x)ᵀ), Bᵀ copied (r × n_out values)
//   dB = (A·x)·dYᵀ, rows of r values:   (out_prod(dY, A·x))ᵀ, the result copied back
// Runs after out_prods_as_mul_mats, which would turn the first back.
void thin_lora_products(trainer & t, ggml_context * ctx, ggml_cgraph * g) {
    if (t.gpu || t.p.rank >= 32) return;
    std::unordered_set<const ggml_tensor *> bs;
    for (auto & L : t.layers)
        for (int tg = 0; tg < T_COUNT; tg++)
            if (L.has_lora[tg]) bs.insert(t.lora[L.lora[tg].b].w);
    if (t.has_out_lora) bs.insert(t.lora[t.out_lora.b].w);

    const int n = ggml_graph_n_nodes(g);
    ggml_tensor ** nodes = ggml_graph_nodes(g);
    rewriter rw(g);
    for (int i = 0; i < n; i++) {
        ggml_tensor * node = nodes[i];
        ggml_tensor * a = node->src[0], * b = node->src[1];
        if (node->op == GGML_OP_MUL_MAT && bs.count(a) && rw.fits(3)) {
            ggml_tensor * bt = rw.add(ggml_cont(ctx, rw.add(ggml_transpose(ctx, a))));
            ggml_tensor * axt = rw.add(ggml_transpose(ctx, b));
            become(node, ggml_out_prod(ctx, bt, axt), bt, axt);
        } else if (node->op == GGML_OP_OUT_PROD && a->type == GGML_TYPE_F32 && b->type == GGML_TYPE_F32 &&
                   ggml_n_dims(a) == 2 && ggml_n_dims(b) == 2 && a->ne[0] <= t.p.rank && b->ne[0] >= 4 * a->ne[0] &&
                   ggml_is_contiguous(a) && ggml_is_contiguous(b) && rw.fits(2)) {
            ggml_tensor * tr = rw.add(ggml_transpose(ctx, rw.add(ggml_out_prod(ctx, b, a))));
            become(node, ggml_cont(ctx, tr), tr, nullptr);
        }
        rw.keep(node);
    }
    rw.commit();
}

// The backward pass of bg.loss into the LoRA accumulators (and the gradient of input, a
// parameter since before the graph was expanded, into input_acc), then the rewrites that
// make it fast and safe.
void backward(trainer & t, built_graph & bg, ggml_tensor * input, ggml_tensor * input_acc) {
    ggml_context * ctx = bg.ctx;
    ggml_set_loss(bg.loss);
    std::unordered_map<const ggml_tensor *, ggml_tensor *> acc;
    for (auto & lt : t.lora) acc[lt.w] = lt.grad;
    if (input) {
        acc[input] = input_acc;
        bg.dx = input_acc;
    }
    const int n = ggml_graph_n_nodes(bg.g);
    std::vector<ggml_tensor *> accs(n, nullptr);
    for (int i = 0; i < n; i++) {
        auto it = acc.find(ggml_graph_node(bg.g, i));
        if (it != acc.end()) accs[i] = it->second;
    }
    ggml_build_backward_expand(ctx, bg.g, accs.data());
    bg.loss_grad = ggml_graph_get_grad_acc(bg.g, bg.loss);
    ggml_set_input(bg.loss_grad);

    use_transposed_weights(t, ctx, bg.g);
    std::unordered_set<const ggml_tensor *> small;
    for (auto & lt : t.lora) small.insert(lt.w);
    out_prods_as_mul_mats(ctx, bg.g, small);
    thin_lora_products(t, ctx, bg.g);

    // The graph allocator may run these backward ops in place over one of their inputs,
    // but the CPU kernels overwrite the output before they are done reading that input
    // (rms_norm_back re-reads its incoming gradient, soft_max_back its forward output).
    // Outputs are never reused, which keeps those inputs intact.
    for (int i = 0; i < ggml_graph_n_nodes(bg.g); i++) {
        ggml_tensor * node = ggml_graph_node(bg.g, i);
        if (node->op == GGML_OP_RMS_NORM_BACK) ggml_set_output(node->src[0]);
        if (node->op == GGML_OP_SOFT_MAX_BACK) ggml_set_output(node->src[1]);
    }
}

// Turns every node whose value reaches no tensor outside the compute buffer (gradient
// accumulators, checkpoint slots: those with an address before the graph is placed) into
// a no-op. In a layer graph those are the layer's last projection, its residual add and
// the stand-in loss: built only to be differentiated, never read by the backward pass.
// Saves the down projection's product, about a third of a recomputed layer; the
// allocator still gives the no-ops room (a few [n_embd, T] tensors).
void drop_unread(ggml_cgraph * g) {
    const int n = ggml_graph_n_nodes(g);
    std::unordered_set<const ggml_tensor *> live;
    std::vector<const ggml_tensor *> todo;
    for (int i = 0; i < n; i++) {
        const ggml_tensor * node = ggml_graph_node(g, i);
        const ggml_tensor * home = node->view_src ? node->view_src : node;
        if (node->op != GGML_OP_NONE && home->data) todo.push_back(node);
    }
    while (!todo.empty()) {
        const ggml_tensor * x = todo.back();
        todo.pop_back();
        if (!live.insert(x).second) continue;
        for (int j = 0; j < GGML_MAX_SRC; j++)
            if (x->src[j]) todo.push_back(x->src[j]);
        if (x->view_src) todo.push_back(x->view_src);
    }
    for (int i = 0; i < n; i++) {
        ggml_tensor * node = ggml_graph_node(g, i);
        if (live.count(node)) continue;
        node->op = GGML_OP_NONE;
        for (int j = 0; j < GGML_MAX_SRC; j++) node->src[j] = nullptr;
    }
}

// Checkpoint slot i as a [n_embd, T] tensor of this graph (its first T columns).
ggml_tensor * slot(trainer & t, ggml_context * ctx, int i, int T) {
    ggml_tensor * x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, t.hp.n_embd, T);
    if (t.measure) {
        x->data = placeholder_data();
    } else {
        char * base = (char *)ggml_backend_buffer_get_base(t.buf_ck);
        if (ggml_backend_tensor_alloc(t.buf_ck, x, base + (size_t)i * t.ck_slot_bytes) != GGML_STATUS_SUCCESS) {
            throw train_error("cannot place a checkpoint tensor");
        }
    }
    return x;
}

} // namespace

int lowest_lora_layer(const trainer & t) {
    for (int il = 0; il < t.hp.n_layer; il++)
        for (int tg = 0; tg < T_COUNT; tg++)
            if (t.layers[il].has_lora[tg]) return il;
    return t.hp.n_layer;
}

int head_rows(const trainer & t) {
    const int64_t per_row = (int64_t)t.hp.n_vocab * (int64_t)sizeof(float);
    return (int)std::max<int64_t>(32, (int64_t)(64 << 20) / std::max<int64_t>(1, per_row));
}

void alloc_checkpoints(trainer & t) {
    const size_t align = ggml_backend_get_alignment(t.backend);
    t.ck_slot_bytes = GGML_PAD((size_t)t.hp.n_embd * (size_t)t.p.max_seq_len * sizeof(float), align);
    if (t.measure) return;
    t.buf_ck = ggml_backend_alloc_buffer(t.backend, t.ck_slot_bytes * (size_t)t.n_slots());
    if (!t.buf_ck) throw train_error("out of memory for the checkpoints");
}

void build_graph(trainer & t, built_graph & bg, graph_kind kind, int T, int n_sel, int layer, int dy_in, int dy_out) {
    const auto & hp = t.hp;
    const bool one_part = kind == G_CK_HEAD || kind == G_CK_LAYER;
    const size_t n_nodes = one_part ? 2048 : graph_nodes_max(t); // one layer: ~400 nodes
    const bool grads = kind == G_TRAIN || one_part;
    ggml_init_params ip = {ggml_tensor_overhead() * n_nodes * 2 + ggml_graph_overhead_custom(n_nodes, grads), nullptr, true};
    bg.ctx = ggml_init(ip);
    if (!bg.ctx) throw train_error("out of memory");
    ggml_context * ctx = bg.ctx;
    bg.g = ggml_new_graph_custom(ctx, n_nodes, grads);

    if (kind != G_CK_HEAD && kind != G_CK_LAYER) {
        bg.tokens = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T);
        ggml_set_name(bg.tokens, "tokens");
        ggml_set_input(bg.tokens);
    }
    if (kind != G_CK_HEAD) {
        bg.pos = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T);
        ggml_set_name(bg.pos, "pos");
        ggml_set_input(bg.pos);
        bg.mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, T, T);
        ggml_set_name(bg.mask, "mask");
        ggml_set_input(bg.mask);
    }

    builder b{t, ctx, T};
    if (kind == G_CK_LAYER) {
        // Layer `layer` again from its kept input, with a loss whose gradient at the
        // layer's output is the one the layer above sent back: sum(y * dy).
        ggml_tensor * x = slot(t, ctx, layer, T);
        if (dy_out >= 0) ggml_set_param(x);
        ggml_tensor * y = b.layer_fwd(t.layers[layer], x, bg.pos, bg.mask);
        bg.loss = ggml_sum(ctx, ggml_mul(ctx, y, slot(t, ctx, dy_in, T)));
        ggml_build_forward_expand(bg.g, bg.loss);
        backward(t, bg, dy_out >= 0 ? x : nullptr, dy_out >= 0 ? slot(t, ctx, dy_out, T) : nullptr);
        drop_unread(bg.g);
        return;
    }

    ggml_tensor * x;
    if (kind == G_CK_HEAD) {
        x = slot(t, ctx, hp.n_layer, T);
        if (dy_out >= 0) ggml_set_param(x);
    } else {
        x = ggml_get_rows(ctx, t.tok_embd, bg.tokens);
        if (t.p.neftune_alpha > 0 && (kind == G_TRAIN || kind == G_CK_FWD)) {
            bg.noise = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.n_embd, T);
            ggml_set_name(bg.noise, "neftune");
            ggml_set_input(bg.noise);
            x = ggml_add(ctx, x, bg.noise);
        }
        const int keep_from = kind == G_CK_FWD ? lowest_lora_layer(t) : hp.n_layer + 1;
        for (int il = 0; il < hp.n_layer; il++) {
            if (il >= keep_from) ggml_build_forward_expand(bg.g, ggml_cpy(ctx, x, slot(t, ctx, il, T)));
            x = b.layer_fwd(t.layers[il], x, bg.pos, bg.mask);
        }
        if (kind == G_CK_FWD) {
            ggml_build_forward_expand(bg.g, ggml_cpy(ctx, x, slot(t, ctx, hp.n_layer, T)));
            return;
        }
    }
    ggml_tensor * h = b.norm(x, t.out_norm);

    if (kind == G_LOGITS) {
        ggml_tensor * logits = b.head(h);
        ggml_set_output(logits);
        bg.logits = logits;
        ggml_build_forward_expand(bg.g, logits);
        thin_lora_products(t, ctx, bg.g);
        return;
    }

    // Only supervised rows reach the output head: cheaper, and the right normalisation
    // (ggml's cross entropy averages over its rows; scaled back to a sum here).
    bg.sel = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_sel);
    ggml_set_name(bg.sel, "sel");
    ggml_set_input(bg.sel);
    bg.labels = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.n_vocab, n_sel);
    ggml_set_name(bg.labels, "labels");
    ggml_set_input(bg.labels);
    ggml_tensor * hs = ggml_get_rows(ctx, h, bg.sel);
    ggml_tensor * logits = b.head(hs);
    ggml_tensor * loss = ggml_scale(ctx, ggml_cross_entropy_loss(ctx, logits, bg.labels), (float)n_sel);
    ggml_set_name(loss, "loss_sum");
    ggml_set_output(loss);
    bg.loss = loss;
    ggml_build_forward_expand(bg.g, loss);
    if (kind == G_EVAL) {
        thin_lora_products(t, ctx, bg.g);
        return;
    }
    const bool dx = kind == G_CK_HEAD && dy_out >= 0;
    backward(t, bg, dx ? x : nullptr, dx ? slot(t, ctx, dy_out, T) : nullptr);
}

} // namespace conch_train
