// CPU threads for a context: one ggml threadpool that lives as long as the context.
//
// ggml is built without OpenMP. Under libgomp every ggml op ends in an OpenMP barrier, and
// once Go has called in from several OS threads (cgo calls land on whichever thread runs
// the goroutine) libgomp counts more threads than CPUs and stops spinning in barriers: each
// op then sleeps on a futex, and generation on 2 cores ran about a third slower. ggml's own
// threadpool spins on an atomic whichever thread calls, and a persistent one saves creating
// the workers on every graph.
#include "conch.h"

#include <string>

#include "ggml-cpu.h"
#include "llama.h"

void conch_set_error(const std::string & msg); // init.cpp

extern "C" struct ggml_threadpool * conch_threads_attach(struct llama_context * ctx, int n_threads) {
    struct ggml_threadpool_params p = ggml_threadpool_params_default(n_threads > 0 ? n_threads : 1);
    struct ggml_threadpool * tp = ggml_threadpool_new(&p);
    if (!tp) {
        conch_set_error("cannot start a pool of " + std::to_string(n_threads) + " threads");
        return nullptr;
    }
    llama_attach_threadpool(ctx, tp, tp);
    return tp;
}

extern "C" void conch_threads_free(struct ggml_threadpool * tp) {
    if (tp) ggml_threadpool_free(tp);
}
