/* Bounds a whole network read from an ONNX file through the C ABI.
 *
 *   network_bound MODEL.onnx [RTOL] [N,C,H,W]
 *
 * Prints one line per linear layer (index, name, op, lower, upper, certificate code), then
 * the network's certified upper bound and the lower bound attained by a pair of inputs.
 * Build: see the Makefile, or
 *   cc -std=c11 -Wall -Wextra -Werror -Iinclude c_examples/network_bound.c \
 *      -Ltarget/release -llipschitz -Wl,-rpath,target/release -o network_bound
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lipschitz.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.onnx [RTOL] [N,C,H,W]\n", argv[0]);
        return 2;
    }
    double rtol = argc > 2 ? strtod(argv[2], NULL) : 1e-4;
    int64_t shape[8];
    size_t ndim = 0;
    if (argc > 3) {
        char *s = argv[3];
        while (*s && ndim < 8) {
            shape[ndim++] = strtoll(s, &s, 10);
            if (*s == ',') s++;
        }
    }
    LipNetwork *net = lip_network_from_onnx(argv[1], ndim ? shape : NULL, ndim);
    if (!net) {
        fprintf(stderr, "error: %s\n", lip_last_error());
        return 1;
    }
    LipOptions opts = lip_options_default();
    opts.rtol = rtol;
    LipBound b;
    size_t n = lip_network_layer_count(net);
    for (size_t i = 0; i < n; i++) {
        if (lip_network_layer_bound_ex(net, i, &opts, &b) != LIP_OK) {
            fprintf(stderr, "error: %s\n", lip_last_error());
            lip_network_free(net);
            return 1;
        }
        printf("layer %zu %s %s %.17g %.17g %d\n", i, lip_network_layer_name(net, i),
               lip_network_layer_op(net, i), b.lower, b.upper, b.certificate);
    }
    if (lip_network_bound_ex(net, &opts, &b) != LIP_OK) {
        fprintf(stderr, "error: %s\n", lip_last_error());
        lip_network_free(net);
        return 1;
    }
    printf("network %.17g %.17g %d\n", b.lower, b.upper, b.certificate);
    lip_network_free(net);
    lip_network_free(NULL); /* a no-op */
    return 0;
}
