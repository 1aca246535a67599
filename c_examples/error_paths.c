/* The C ABI's error paths and thread safety, tested from C.
 *
 *   error_paths MODEL.onnx
 *
 * Every bad call must return the documented status and leave a message; then 8 threads
 * compute layer and network bounds at once and must get the results of a sequential run.
 * Prints "ok" and exits 0 when everything holds. Build with -pthread.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lipschitz.h"

static int failures = 0;

static void expect(const char *what, int32_t got, int32_t want) {
    const char *msg = lip_last_error();
    if (got != want || (want != LIP_OK && (msg == NULL || msg[0] == '\0'))) {
        fprintf(stderr, "FAIL %s: status %d, expected %d (%s)\n", what, got, want, msg ? msg : "NULL");
        failures++;
    }
}

static LipConv2d conv_layer(void) {
    LipConv2d c;
    memset(&c, 0, sizeof c);
    c.out_channels = 4; c.in_channels = 3; c.kernel_h = 3; c.kernel_w = 3;
    c.input_h = 8; c.input_w = 7; c.stride_h = 1; c.stride_w = 1;
    c.dilation_h = 1; c.dilation_w = 1; c.groups = 1;
    c.pad_top = 1; c.pad_left = 1; c.pad_bottom = 1; c.pad_right = 1;
    c.padding_mode = LIP_PADDING_ZEROS;
    return c;
}

static float weights[4 * 3 * 9];
static const char *model;

typedef struct { int index; double layer_upper, net_lower, net_upper; int status; } Job;

static void *work(void *arg) {
    Job *job = arg;
    LipConv2d c = conv_layer();
    c.input_h = (uint32_t)(6 + job->index % 4);
    LipBound b;
    job->status = lip_conv2d_norm(weights, &c, 1e-6, &b);
    job->layer_upper = b.upper;
    LipNetwork *net = lip_network_from_onnx(model, NULL, 0);
    if (!net) { job->status = -100; return NULL; }
    LipBound nb;
    int32_t s = lip_network_bound(net, 1e-5, &nb);
    if (s != LIP_OK) job->status = s;
    job->net_lower = nb.lower;
    job->net_upper = nb.upper;
    lip_network_free(net);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s MODEL.onnx\n", argv[0]); return 2; }
    model = argv[1];
    for (size_t i = 0; i < sizeof weights / sizeof weights[0]; i++)
        weights[i] = (float)((int)((i * 7) % 11) - 5) / 10.0f;
    LipConv2d c = conv_layer();
    LipBound b;
    LipOptions o = lip_options_default();

    /* NULL pointers. */
    expect("dense NULL w", lip_dense_norm(NULL, 3, 4, 1e-4, &b), LIP_ERR_NULL_POINTER);
    expect("dense NULL out", lip_dense_norm(weights, 3, 4, 1e-4, NULL), LIP_ERR_NULL_POINTER);
    expect("conv NULL weights", lip_conv2d_norm(NULL, &c, 1e-4, &b), LIP_ERR_NULL_POINTER);
    expect("conv NULL conv", lip_conv2d_norm(weights, NULL, 1e-4, &b), LIP_ERR_NULL_POINTER);
    expect("conv NULL out", lip_conv2d_norm(weights, &c, 1e-4, NULL), LIP_ERR_NULL_POINTER);
    expect("network bound NULL", lip_network_bound(NULL, 1e-4, &b), LIP_ERR_NULL_POINTER);
    if (lip_network_from_onnx(NULL, NULL, 0) != NULL) { fprintf(stderr, "FAIL NULL path\n"); failures++; }
    if (lip_network_layer_count(NULL) != 0) { fprintf(stderr, "FAIL count(NULL)\n"); failures++; }
    lip_network_free(NULL);

    /* Zero and overflowing sizes. */
    expect("dense zero rows", lip_dense_norm(weights, 0, 4, 1e-4, &b), LIP_ERR_INVALID_ARGUMENT);
    expect("dense overflow", lip_dense_norm(weights, SIZE_MAX, 2, 1e-4, &b), LIP_ERR_TOO_LARGE);
    LipConv2d z = c; z.kernel_h = 0;
    expect("conv zero kernel", lip_conv2d_norm(weights, &z, 1e-4, &b), LIP_ERR_INVALID_ARGUMENT);
    z = c; z.stride_w = 0;
    expect("conv zero stride", lip_conv2d_norm(weights, &z, 1e-4, &b), LIP_ERR_INVALID_ARGUMENT);

    /* Sizes no buffer can have: refused before anything is read (a size_t of -1). */
    expect("dense size -1", lip_dense_norm(weights, (size_t)-1, 1, 1e-4, &b), LIP_ERR_TOO_LARGE);
    expect("dense 2^40 rows", lip_dense_norm(weights, (size_t)1 << 40, 1, 1e-4, &b), LIP_ERR_TOO_LARGE);

    /* Hostile options: thousands of threads are refused, an absurd time limit means none. */
    LipOptions hostile = lip_options_default();
    hostile.threads = 5000;
    expect("threads 5000", lip_dense_norm_ex(weights, 3, 4, &hostile, &b), LIP_ERR_INVALID_ARGUMENT);
    hostile.threads = 0;
    hostile.time_limit_seconds = 1e300;
    expect("time limit 1e300", lip_dense_norm_ex(weights, 3, 4, &hostile, &b), LIP_OK);
    hostile.time_limit_seconds = NAN;
    expect("time limit NaN", lip_dense_norm_ex(weights, 3, 4, &hostile, &b), LIP_ERR_INVALID_ARGUMENT);

    /* A pooling window of 2^32-1 with matching pads must not take the host down. */
    {
        int64_t shape[4] = {1, 1, 4, 4};
        LipNetwork *p = lip_network_new(shape, 4);
        if (p && lip_network_add_pool(p, 1, 0xFFFFFFFFu, 1, 0x7FFFFFFFu) == LIP_OK) {
            int32_t s = lip_network_bound(p, 1e-3, &b);
            if (s != LIP_OK && s >= 0) { fprintf(stderr, "FAIL huge pool status %d\n", s); failures++; }
        }
        lip_network_free(p);
    }

    /* Bad enum values and options. */
    z = c; z.padding_mode = 9;
    expect("conv bad padding_mode", lip_conv2d_norm(weights, &z, 1e-4, &b), LIP_ERR_INVALID_ARGUMENT);
    o.method = -3;
    expect("bad method", lip_dense_norm_ex(weights, 3, 4, &o, &b), LIP_ERR_INVALID_ARGUMENT);
    o = lip_options_default(); o.rtol = 0.0;
    expect("rtol 0", lip_dense_norm_ex(weights, 3, 4, &o, &b), LIP_ERR_INVALID_ARGUMENT);
    int64_t shape[2] = {1, 4};
    LipNetwork *built = lip_network_new(shape, 2);
    expect("bad activation", lip_network_add_activation(built, 42, 0.0), LIP_ERR_INVALID_ARGUMENT);
    expect("bad pool kind", lip_network_add_pool(built, 5, 2, 2, 0), LIP_ERR_INVALID_ARGUMENT);

    /* NaN weights. */
    float nan_w[12];
    for (int i = 0; i < 12; i++) nan_w[i] = 1.0f;
    nan_w[5] = NAN;
    expect("dense NaN", lip_dense_norm(nan_w, 3, 4, 1e-4, &b), LIP_ERR_NON_FINITE);
    expect("builder NaN", lip_network_add_dense(built, nan_w, 3, 4, NULL), LIP_ERR_NON_FINITE);
    lip_network_free(built);
    /* Use after free and double free: an error status, no crash. */
    expect("use after free", lip_network_add_flatten(built), LIP_ERR_INVALID_ARGUMENT);
    lip_network_free(built);
    if (strstr(lip_last_error(), "not a live network handle") == NULL) {
        fprintf(stderr, "FAIL double free: %s\n", lip_last_error());
        failures++;
    }

    /* A bad ONNX path. */
    if (lip_network_from_onnx("/no/such/dir/model.onnx", NULL, 0) != NULL ||
        strstr(lip_last_error(), "/no/such/dir/model.onnx") == NULL) {
        fprintf(stderr, "FAIL bad path: %s\n", lip_last_error());
        failures++;
    }

    /* 8 threads at once give the sequential results. */
    Job seq[8], par[8];
    for (int i = 0; i < 8; i++) { seq[i].index = i; work(&seq[i]); }
    pthread_t t[8];
    for (int i = 0; i < 8; i++) { par[i].index = i; pthread_create(&t[i], NULL, work, &par[i]); }
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 8; i++) {
        if (seq[i].status != LIP_OK || par[i].status != LIP_OK ||
            seq[i].layer_upper != par[i].layer_upper || seq[i].net_lower != par[i].net_lower ||
            seq[i].net_upper != par[i].net_upper) {
            fprintf(stderr, "FAIL thread %d: status %d/%d, %.17g/%.17g\n", i, seq[i].status,
                    par[i].status, seq[i].net_upper, par[i].net_upper);
            failures++;
        }
    }
    if (failures == 0) printf("ok\n");
    return failures == 0 ? 0 : 1;
}
