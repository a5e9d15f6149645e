// Process-wide setup: backend init, log filtering, last-error capture.
#include "conch.h"

#include <malloc.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "ggml-backend.h"
#include "llama.h"

static int g_log_level = 3;
static thread_local std::string t_last_error;

static void conch_log(enum ggml_log_level level, const char * text, void *) {
    int lv;
    switch (level) {
        case GGML_LOG_LEVEL_DEBUG: lv = 0; break;
        case GGML_LOG_LEVEL_INFO:  lv = 1; break;
        case GGML_LOG_LEVEL_WARN:  lv = 2; break;
        case GGML_LOG_LEVEL_ERROR: lv = 3; break;
        default: lv = 1; break; // CONT and NONE continue the previous line
    }
    if (level == GGML_LOG_LEVEL_ERROR && text) {
        std::string s(text);
        while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
        if (!s.empty()) t_last_error = s;
    }
    if (lv >= g_log_level) fputs(text, stderr);
}

extern "C" void conch_init(void) {
    static std::once_flag once;
    std::call_once(once, [] {
        // glibc raises its mmap threshold after big frees, which keeps later model-sized
        // buffers on the heap and resident after they are freed; pin it.
        mallopt(M_MMAP_THRESHOLD, 1 << 20);
        const char * env = getenv("CONCH_LOG");
        if (env) {
            if (!strcmp(env, "debug")) g_log_level = 0;
            else if (!strcmp(env, "info")) g_log_level = 1;
            else if (!strcmp(env, "warn")) g_log_level = 2;
        }
        llama_log_set(conch_log, nullptr);
        ggml_log_set(conch_log, nullptr);
        llama_backend_init();
    });
}

extern "C" void conch_set_log_level(int level) { g_log_level = level; }

extern "C" const char * conch_last_error(void) { return t_last_error.c_str(); }

extern "C" void conch_clear_error(void) { t_last_error.clear(); }

// The index-th GPU device of the registry, or null.
static ggml_backend_dev_t gpu_dev(int index) {
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t d = ggml_backend_dev_get(i);
        auto t = ggml_backend_dev_type(d);
        if ((t == GGML_BACKEND_DEVICE_TYPE_GPU || t == GGML_BACKEND_DEVICE_TYPE_IGPU) && index-- == 0) return d;
    }
    return nullptr;
}

extern "C" int conch_gpu_count(void) {
    int n = 0;
    while (gpu_dev(n)) n++;
    return n;
}

extern "C" int conch_gpu_info(int index, const char ** name, uint64_t * free, uint64_t * total) {
    ggml_backend_dev_t d = gpu_dev(index);
    if (!d) return 1;
    size_t f = 0, t = 0;
    ggml_backend_dev_memory(d, &f, &t);
    *name = ggml_backend_dev_description(d);
    *free = f;
    *total = t;
    return 0;
}

// Lets our own native code (bindings/train*.cpp) report errors through conch_last_error.
void conch_set_error(const std::string & msg) { t_last_error = msg; }
