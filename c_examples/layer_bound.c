/* Spectral norms of a dense and a conv layer through the C ABI.
 *
 * Build (from the repository root, after `cargo build --release`):
 *   cc -std=c11 -Wall -Wextra -Werror -Iinclude c_examples/layer_bound.c \
 *      -Ltarget/release -llipschitz -Wl,-rpath,target/release -o layer_bound
 * or statically:
 *   cc -std=c11 -Iinclude c_examples/layer_bound.c target/release/liblipschitz.a \
 *      -lpthread -ldl -lm -o layer_bound
 *
 * Prints one line per layer: name, lower, upper, certificate code; then shows an error path.
 */
#include <stdio.h>
#include <stdlib.h>

#include "lipschitz.h"

/* The same deterministic weights as tests/c_examples.rs uses on the Rust side. */
static float weight(size_t i) { return (float)((int)((i * 7) % 11) - 5) / 10.0f; }

static int report(const char *name, int32_t status, const LipBound *b) {
    if (status != LIP_OK) {
        fprintf(stderr, "%s: error %d: %s\n", name, status, lip_last_error());
        return 1;
    }
    printf("%s %.17g %.17g %d\n", name, b->lower, b->upper, b->certificate);
    return 0;
}

int main(void) {
    int failures = 0;
    printf("lipschitz %s\n", lip_version());

    /* A dense 3x4 layer, row-major, rows = outputs. */
    float dense[12];
    for (size_t i = 0; i < 12; i++) dense[i] = weight(i);
    LipBound b;
    failures += report("dense", lip_dense_norm(dense, 3, 4, 1e-6, &b), &b);

    /* A 3->4 channel 3x3 conv on 8x7 images, padding 1: zero and circular padding. */
    LipConv2d conv = {
        .out_channels = 4, .in_channels = 3, .kernel_h = 3, .kernel_w = 3,
        .input_h = 8, .input_w = 7, .stride_h = 1, .stride_w = 1,
        .dilation_h = 1, .dilation_w = 1, .groups = 1,
        .pad_top = 1, .pad_left = 1, .pad_bottom = 1, .pad_right = 1,
        .padding_mode = LIP_PADDING_ZEROS,
    };
    size_t n = (size_t)conv.out_channels * conv.in_channels * conv.kernel_h * conv.kernel_w;
    float *w = malloc(n * sizeof(float));
    if (!w) return 2;
    for (size_t i = 0; i < n; i++) w[i] = weight(i);
    failures += report("conv_zeros", lip_conv2d_norm(w, &conv, 1e-6, &b), &b);
    conv.padding_mode = LIP_PADDING_CIRCULAR;
    failures += report("conv_circular", lip_conv2d_norm(w, &conv, 1e-6, &b), &b);

    /* Errors come back as a status and a message, never a crash. */
    conv.padding_mode = 7;
    int32_t status = lip_conv2d_norm(w, &conv, 1e-6, &b);
    printf("bad_padding_mode %d %s\n", status, lip_last_error());
    if (status != LIP_ERR_INVALID_ARGUMENT) failures++;
    status = lip_dense_norm(NULL, 3, 4, 1e-6, &b);
    printf("null_weights %d %s\n", status, lip_last_error());
    if (status != LIP_ERR_NULL_POINTER) failures++;

    free(w);
    return failures == 0 ? 0 : 1;
}
