// Quantisation through llama.cpp's own quantiser (its per-tensor type choices for the
// K-quant mixes are what users expect from "q4_k_m"), and a cheap load check for files we
// write. Go validates the input and the type first; llama_model_quantize reports the rest
// as exceptions, which it turns into a logged error and a non-zero return.
#include "conch.h"

#include <string>

#include "llama.h"

void conch_set_error(const std::string & msg); // init.cpp

extern "C" int conch_quantize(const char * in_path, const char * out_path, int ftype, int n_threads) {
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.ftype = (enum llama_ftype) ftype;
    qp.nthread = n_threads;
    // The merged file holds adapted tensors in F16/F32 beside the base's own (possibly
    // quantised) ones; those must be converted too.
    qp.allow_requantize = true;
    qp.quantize_output_tensor = true;
    if (llama_model_quantize(in_path, out_path, &qp) != 0) {
        return 1; // the message was logged and captured by our log hook
    }
    return 0;
}

// The check loads everything llama.cpp validates before reading weights (metadata,
// vocabulary, hyperparameters, every tensor's name, type, shape and place in the file)
// and stops at the first progress report, before any weight is read: memory-mapping with
// prefetch would pull the whole file into memory, and reading it would cost as much.
static bool stop_at_weights(float, void * reached) {
    *(bool *) reached = true;
    return false;
}

extern "C" int conch_model_check(const char * path) {
    bool reached = false;
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.use_mmap = false;        // buffers are allocated but never touched
    mp.use_extra_bufts = false; // no repacking
    mp.check_tensors = false;
    mp.progress_callback = stop_at_weights;
    mp.progress_callback_user_data = &reached;
    llama_model * m = llama_model_load_from_file(path, mp);
    if (m) {
        llama_model_free(m);
        return 0;
    }
    if (reached) {
        conch_clear_error(); // the "cancelled" load is our own doing
        return 0;
    }
    return 1;
}
