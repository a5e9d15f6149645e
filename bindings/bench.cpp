// The reference decode loop for benchmarks: the same work as llama.Context.Generate
// (prefill in n_batch chunks, then one token per decode, sampled by the same chain),
// with no Go in between, so the cost of the Go path can be measured.
#include "conch.h"

#include <chrono>
#include <vector>

#include "llama.h"

extern "C" int conch_bench_decode(struct llama_context * ctx, struct llama_sampler * smpl,
                                  const int32_t * prompt, int n_prompt, int n_gen,
                                  double * pp_seconds, double * tg_seconds) {
    using clock = std::chrono::steady_clock;
    const int n_batch = (int) llama_n_batch(ctx);
    llama_memory_seq_rm(llama_get_memory(ctx), 0, 0, -1);
    llama_batch batch = llama_batch_init(n_batch, 0, 1);
    auto add = [&](llama_token t, int pos, bool logits) {
        int i = batch.n_tokens++;
        batch.token[i] = t;
        batch.pos[i] = pos;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = logits;
    };
    int rc = 0;
    auto t0 = clock::now();
    for (int i = 0; i < n_prompt && rc == 0; i += n_batch) {
        batch.n_tokens = 0;
        for (int j = i; j < n_prompt && j < i + n_batch; j++) add(prompt[j], j, j == n_prompt - 1);
        rc = llama_decode(ctx, batch);
    }
    auto t1 = clock::now();
    int pos = n_prompt, last = batch.n_tokens - 1;
    for (int g = 0; g < n_gen && rc == 0; g++) {
        llama_token t = llama_sampler_sample(smpl, ctx, last);
        if (g == n_gen - 1) break;
        batch.n_tokens = 0;
        add(t, pos++, true);
        last = 0;
        rc = llama_decode(ctx, batch);
    }
    auto t2 = clock::now();
    llama_batch_free(batch);
    *pp_seconds = std::chrono::duration<double>(t1 - t0).count();
    *tg_seconds = std::chrono::duration<double>(t2 - t1).count();
    return rc;
}
