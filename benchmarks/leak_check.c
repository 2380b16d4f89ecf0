/*
 * leak_check: RSS over many load / score / free cycles of the C API.
 *
 *     leak_check MODEL.safetensors [CYCLES=10000]
 *
 * Each cycle loads the model from memory, makes a session and a stream,
 * scores 3 cubes, pushes 3 frames with boxes through the stream, provokes
 * the common errors (truncated model, NULL pointers, short buffer, frame
 * size change), and frees everything. RSS is read from /proc/self/statm
 * after a warm-up (allocator pools, OpenMP and OpenBLAS threads settle in
 * the first cycles) and at the end; exit status 1 if it grew by more than
 * 8 MiB (a leak of even 1 KB per cycle would show as 10 MB).
 *
 * Build and run: benchmarks/leak_check.sh (uses .build/release/libpkgnet.so).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pkgnet.h>

static long rss_kib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int check(pkgnet_status st, pkgnet_status want, const char *what)
{
    if (st == want) return 0;
    fprintf(stderr, "leak_check: %s: got %s, expected %s: %s\n", what, pkgnet_status_name(st),
            pkgnet_status_name(want), pkgnet_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.safetensors [CYCLES]\n", argv[0]);
        return 2;
    }
    const long cycles = argc > 2 ? atol(argv[2]) : 10000;
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *file = malloc((size_t)size);
    if (!file || fread(file, 1, (size_t)size, f) != (size_t)size) { perror("read"); return 2; }
    fclose(f);

    enum { N = 3, W = 64, H = 48 };
    const size_t cube_bytes = 5 * 32 * 32 * 3;
    unsigned char *cubes = malloc(N * cube_bytes);
    unsigned char *pixels = malloc(W * H * 3);
    for (size_t i = 0; i < N * cube_bytes; i++) cubes[i] = (unsigned char)(i * 7 + i / 3000);
    float pe[N], comb[N], inc[N * PKGNET_MAX_PAIRS];
    const pkgnet_detection det = {.box = {10, 8, 40, 40}, .confidence = 0.9f};
    const long warmup = cycles < 200 ? cycles / 2 : 100;
    long before = 0;
    int failures = 0;

    for (long cycle = 0; cycle < cycles && failures == 0; cycle++) {
        if (cycle == warmup) before = rss_kib();
        pkgnet_model *model = NULL;
        failures += check(pkgnet_model_load_from_memory(file, (size_t)size, &model), PKGNET_OK, "load");
        if (!model) break;
        pkgnet_model *broken = NULL;
        failures += check(pkgnet_model_load_from_memory(file, (size_t)size / 2, &broken), PKGNET_ERR_FORMAT, "truncated load");

        pkgnet_session *session = NULL;
        failures += check(pkgnet_session_create(model, 1, &session), PKGNET_OK, "session");
        pkgnet_outputs out = {.capacity = N, .prediction_error = pe, .combined = comb, .inconsistency = inc};
        failures += check(pkgnet_score_u8(session, cubes, N, N * cube_bytes, &out), PKGNET_OK, "score");
        failures += check(pkgnet_score_u8(session, cubes, N, N * cube_bytes - 1, &out), PKGNET_ERR_INVALID_ARGUMENT, "short buffer");
        failures += check(pkgnet_score_u8(session, NULL, N, N * cube_bytes, &out), PKGNET_ERR_INVALID_ARGUMENT, "NULL cubes");

        pkgnet_stream_options options;
        pkgnet_stream_options_init(&options);
        options.use_motion = 1;
        options.threads = 1;
        pkgnet_stream *stream = NULL;
        failures += check(pkgnet_stream_create(model, &options, &stream), PKGNET_OK, "stream");
        for (int t = 0; t < 3; t++) {
            for (int i = 0; i < W * H * 3; i++) pixels[i] = (unsigned char)((i + 5 * t) * 13);
            const pkgnet_frame frame = {.data = pixels, .width = W, .height = H, .stride = W * 3, .format = PKGNET_PIXEL_BGR};
            failures += check(pkgnet_stream_push(stream, &frame, &det, 1), PKGNET_OK, "push");
            size_t count = 0;
            failures += check(pkgnet_stream_objects(stream, NULL, 0, &count), PKGNET_OK, "objects");
        }
        const pkgnet_frame smaller = {.data = pixels, .width = W / 2, .height = H, .stride = W * 3, .format = PKGNET_PIXEL_BGR};
        failures += check(pkgnet_stream_push(stream, &smaller, NULL, 0), PKGNET_ERR_INVALID_ARGUMENT, "size change");
        failures += check(pkgnet_stream_finish(stream), PKGNET_OK, "finish");

        pkgnet_stream_free(stream);
        pkgnet_session_free(session);
        pkgnet_model_free(model);
        if ((cycle + 1) % 1000 == 0) fprintf(stderr, "cycle %ld: RSS %ld KiB\n", cycle + 1, rss_kib());
    }
    const long after = rss_kib();
    printf("cycles %ld  RSS after warm-up (cycle %ld) %ld KiB  at the end %ld KiB  growth %ld KiB\n",
           cycles, warmup, before, after, after - before);
    free(file); free(cubes); free(pixels);
    if (failures) return 1;
    return after - before > 8 * 1024 ? 1 : 0;
}
