// CPU threads for a context: one ggml threadpool that lives as long as the context.
//
// ggml is built without OpenMP. Under libgomp every ggml op ends in an OpenMP barrier, and
// cgo calls arrive from whichever OS thread runs the goroutine, so each new caller thread
// brought its own libgomp team. Measured on 2 cores: the barriers then slept on futexes and
// generation ran a third slower; locking the caller to one OS thread, or
// OMP_WAIT_POLICY=active, gave the speed back (GOMP_SPINCOUNT did not), which points at
// libgomp's throttled spinning once it manages more threads than CPUs. ggml's own
// threadpool spins on an atomic whichever thread calls, and keeping one per context saves
// starting the workers for every graph.
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
