// Applying LoRA adapters to a context at run time.
//
// llama.cpp reuses the previous compute graph when the new batch has the same shape, and
// decides that by comparing the *address* of the context's adapter map, which never
// changes. After adding or removing an adapter the next same-shape decode would therefore
// still run the old set. Reserving a (split-only) graph resets the reuse state.
#include "conch.h"

#include <exception>
#include <string>

#include "llama.h"
#include "llama-context.h"
#include "llama-memory.h"

static int invalidate_graph(llama_context * ctx) {
    try {
        auto mctx = llama_get_memory(ctx)->init_full();
        ctx->graph_reserve(1, 1, 1, mctx.get(), /*split_only=*/true);
        return 0;
    } catch (const std::exception & e) {
        return -1;
    }
}

extern "C" int conch_adapter_set(struct llama_context * ctx, struct llama_adapter_lora * a, float scale) {
    if (llama_set_adapter_lora(ctx, a, scale) != 0) return -1;
    return invalidate_graph(ctx);
}

extern "C" int conch_adapter_rm(struct llama_context * ctx, struct llama_adapter_lora * a) {
    llama_rm_adapter_lora(ctx, a);
    return invalidate_graph(ctx);
}

extern "C" int conch_adapter_clear(struct llama_context * ctx) {
    llama_clear_adapter_lora(ctx);
    return invalidate_graph(ctx);
}
