/*
 * score_cubes: scores object cubes with a pkgnet model.
 *
 *     score_cubes MODEL.safetensors CUBES.u8 N
 *
 * CUBES.u8 holds N raw uint8 cubes [N][5][32][32][C] (frames oldest first,
 * pixels HWC, C the model's channels). Prints one line per cube:
 *
 *     i prediction_error inconsistency_1 ... inconsistency_K combined
 *
 * Build: cc score_cubes.c $(pkg-config --cflags --libs pkgnet)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pkgnet.h>

static int fail(const char *what, pkgnet_status status) {
    fprintf(stderr, "score_cubes: %s: %s (%s)\n", what, pkgnet_last_error(),
            pkgnet_status_name(status));
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL.safetensors CUBES.u8 N\n", argv[0]);
        return 1;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long n_arg = strtoull(argv[3], &end, 10);
    if (errno || end == argv[3] || *end != '\0' || argv[3][0] == '-') {
        fprintf(stderr, "score_cubes: N must be a non-negative integer, got '%s'\n", argv[3]);
        return 1;
    }
    size_t n = (size_t)n_arg;

    pkgnet_model *model = NULL;
    pkgnet_status st = pkgnet_model_load(argv[1], &model);
    if (st != PKGNET_OK)
        return fail(argv[1], st);
    pkgnet_model_info info;
    st = pkgnet_model_get_info(model, &info);
    if (st != PKGNET_OK) {
        pkgnet_model_free(model);
        return fail("model info", st);
    }

    size_t cube_bytes = (size_t)PKGNET_CUBE_FRAMES * PKGNET_CROP_SIZE * PKGNET_CROP_SIZE * info.channels;
    if (n > 0 && n > SIZE_MAX / cube_bytes) {
        fprintf(stderr, "score_cubes: N=%zu is too large\n", n);
        pkgnet_model_free(model);
        return 1;
    }
    size_t size = n * cube_bytes;

    /* Read the whole file and insist on the exact size: a short or long file
     * means N or the channel count is wrong, and scoring garbage would hide it. */
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        fprintf(stderr, "score_cubes: %s: %s\n", argv[2], strerror(errno));
        pkgnet_model_free(model);
        return 1;
    }
    uint8_t *cubes = malloc(size ? size : 1);
    float *pe = malloc((n ? n : 1) * sizeof(float));
    float *inc = malloc((n ? n : 1) * (size_t)info.pairs * sizeof(float));
    float *comb = malloc((n ? n : 1) * sizeof(float));
    if (!cubes || !pe || !inc || !comb) {
        fprintf(stderr, "score_cubes: out of memory for %zu cubes\n", n);
        fclose(f);
        free(cubes); free(pe); free(inc); free(comb);
        pkgnet_model_free(model);
        return 1;
    }
    size_t got = fread(cubes, 1, size, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != size || extra) {
        fprintf(stderr, "score_cubes: %s: expected exactly %zu bytes (%zu cubes of 5x32x32x%d)\n",
                argv[2], size, n, info.channels);
        free(cubes); free(pe); free(inc); free(comb);
        pkgnet_model_free(model);
        return 1;
    }

    pkgnet_session *session = NULL;
    st = pkgnet_session_create(model, 0, &session);
    /* The session holds its own reference: the model handle is not needed any more. */
    pkgnet_model_free(model);
    if (st != PKGNET_OK) {
        free(cubes); free(pe); free(inc); free(comb);
        return fail("session", st);
    }

    pkgnet_outputs out = {0};
    out.capacity = n;
    out.prediction_error = pe;
    out.inconsistency = inc;
    out.combined = comb;
    st = pkgnet_score_u8(session, cubes, n, size, &out);
    int rc = 0;
    if (st != PKGNET_OK) {
        rc = fail("score", st);
    } else {
        for (size_t i = 0; i < n; i++) {
            printf("%zu %.9g", i, pe[i]);
            for (int j = 0; j < info.pairs; j++)
                printf(" %.9g", inc[i * (size_t)info.pairs + j]);
            printf(" %.9g\n", comb[i]);
        }
    }
    pkgnet_session_free(session);
    free(cubes); free(pe); free(inc); free(comb);
    return rc;
}
