/* Certified robustness through the C ABI: each sample's prediction and certified l2 radii,
 * and the certified accuracy at one radius.
 *
 *   certify MODEL.onnx X.npy Y.npy [EPS]
 *
 * X.npy: float32, C order, N samples in the model's input layout; Y.npy: int64 labels.
 * Prints "sample i label predicted margin r_global r_pairwise r_local" per sample, then
 * "summary L certificate classes clean_accuracy" and "certified EPS global pairwise local".
 * Build: see the Makefile.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lipschitz.h"

/* Reads a version-1 .npy file whose dtype is `descr` ("<f4", "<i8"): returns the data and
 * the element count, or NULL. */
static void *read_npy(const char *path, const char *descr, size_t width, size_t *count) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char head[10];
    void *data = NULL;
    if (fread(head, 1, 10, f) == 10 && memcmp(head, "\x93NUMPY", 6) == 0 && head[6] == 1) {
        size_t len = (size_t)head[8] | ((size_t)head[9] << 8);
        char *header = calloc(len + 1, 1);
        if (header && fread(header, 1, len, f) == len && strstr(header, descr) &&
            strstr(header, "'fortran_order': False")) {
            long start = ftell(f);
            fseek(f, 0, SEEK_END);
            size_t bytes = (size_t)(ftell(f) - start);
            fseek(f, start, SEEK_SET);
            *count = bytes / width;
            data = malloc(bytes ? bytes : 1);
            if (data && fread(data, width, *count, f) != *count) {
                free(data);
                data = NULL;
            }
        }
        free(header);
    }
    fclose(f);
    return data;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.onnx X.npy Y.npy [EPS]\n", argv[0]);
        return 2;
    }
    double eps = argc > 4 ? strtod(argv[4], NULL) : 0.1412;
    size_t nx = 0, n = 0;
    float *x = read_npy(argv[2], "<f4", sizeof(float), &nx);
    int64_t *y = read_npy(argv[3], "<i8", sizeof(int64_t), &n);
    if (!x || !y || n == 0 || nx % n != 0) {
        fprintf(stderr, "error: cannot read %s and %s as float32 inputs and int64 labels\n",
                argv[2], argv[3]);
        return 1;
    }
    LipNetwork *net = lip_network_from_onnx(argv[1], NULL, 0);
    if (!net) {
        fprintf(stderr, "error: %s\n", lip_last_error());
        return 1;
    }
    LipSampleRadii *radii = malloc(n * sizeof *radii);
    LipCertifySummary summary;
    LipOptions opts = lip_options_default();
    int32_t status =
        lip_network_certify(net, x, n, nx / n, y, 1, &opts, radii, &summary);
    if (status != LIP_OK) {
        fprintf(stderr, "error: %s\n", lip_last_error());
        return 1;
    }
    size_t certified[3] = {0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        const LipSampleRadii *r = &radii[i];
        printf("sample %zu %lld %lld %.17g %.17g %.17g %.17g\n", i, (long long)y[i],
               (long long)r->predicted, r->margin, r->radius_global, r->radius_pairwise,
               r->radius_local);
        if (r->predicted == y[i]) {
            certified[0] += r->radius_global >= eps;
            certified[1] += r->radius_pairwise >= eps;
            certified[2] += r->radius_local >= eps; /* false for NaN */
        }
    }
    printf("summary %.17g %d %u %.17g\n", summary.lipschitz, summary.certificate,
           summary.classes, summary.clean_accuracy);
    printf("certified %g %.6f %.6f %.6f\n", eps, (double)certified[0] / n,
           (double)certified[1] / n, (double)certified[2] / n);
    free(radii);
    free(x);
    free(y);
    lip_network_free(net);
    return 0;
}
