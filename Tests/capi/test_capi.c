/*
 * test_capi: checks the contracts that include/pkgnet.h promises, through the
 * C ABI alone (what a C user sees, with no Python in between).
 *
 *     test_capi MODEL.safetensors
 *
 * MODEL is any valid pkgnet model file; the test makes its own garbage files.
 * Prints one line per failed check and ends with "N passed, N failed"; exits
 * nonzero if any check failed.
 *
 * Build: cc -std=c11 -pthread test_capi.c -Iinclude -L.build/release -lpkgnet -lm
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pkgnet.h>

static int passed, failed;

#define CHECK(cond, ...)                                          \
    do {                                                          \
        if (cond) {                                               \
            passed++;                                             \
        } else {                                                  \
            failed++;                                             \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                                  \
            printf("\n");                                         \
        }                                                         \
    } while (0)

/* A failing call must say which status and leave a message behind. */
#define CHECK_STATUS(call, want)                                                   \
    do {                                                                           \
        pkgnet_status st_ = (call);                                                \
        const char *msg_ = pkgnet_last_error();                                    \
        CHECK(st_ == (want), "%s returned %s, want %s (last error: %s)", #call,    \
              pkgnet_status_name(st_), pkgnet_status_name(want), msg_ ? msg_ : "(null)"); \
        if ((want) != PKGNET_OK)                                                   \
            CHECK(msg_ != NULL && msg_[0] != '\0', "%s: empty pkgnet_last_error", #call); \
    } while (0)

#define CUBE_PIXELS (PKGNET_CUBE_FRAMES * PKGNET_CROP_SIZE * PKGNET_CROP_SIZE)

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(len > 0 ? (size_t)len : 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = (size_t)len;
    return buf;
}

/* Writes bytes to a fresh temporary file; returns its path (caller unlinks). */
static char *temp_file(const void *data, size_t size) {
    static char paths[4][4096];
    static int next;
    char *path = paths[next++ % 4];
    const char *dir = getenv("TMPDIR");
    if (!dir || !dir[0] || strlen(dir) > 4000)
        dir = "/tmp";
    snprintf(path, sizeof paths[0], "%s/pkgnet_capi_XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return NULL;
    }
    close(fd);
    return path;
}

/* Deterministic pseudo-random cubes: the test must not depend on the seed of rand(). */
static void make_cubes(uint8_t *cubes, size_t count, uint32_t seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < count; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        cubes[i] = (uint8_t)(x >> 24);
    }
}

static int close_rel(float a, float b, float rel) {
    float scale = fabsf(a) > fabsf(b) ? fabsf(a) : fabsf(b);
    return fabsf(a - b) <= rel * scale + 1e-7f;
}

/* ---- per-thread error slot ---- */

static void *fresh_thread_error(void *arg) {
    const char *msg = pkgnet_last_error();
    *(int *)arg = msg != NULL && msg[0] == '\0';
    return NULL;
}

/* ---- concurrent calls on one session ---- */

struct busy_ctx {
    pkgnet_session *session;
    const uint8_t *cubes;
    size_t n, size;
    int ok, busy, other;
};

static void *busy_worker(void *arg) {
    struct busy_ctx *c = arg;
    float *pe = malloc(c->n * sizeof(float));
    for (int i = 0; i < 12; i++) {
        pkgnet_outputs out = {0};
        out.capacity = c->n;
        out.prediction_error = pe;
        pkgnet_status st = pkgnet_score_u8(c->session, c->cubes, c->n, c->size, &out);
        if (st == PKGNET_OK)
            __atomic_add_fetch(&c->ok, 1, __ATOMIC_RELAXED);
        else if (st == PKGNET_ERR_BUSY)
            __atomic_add_fetch(&c->busy, 1, __ATOMIC_RELAXED);
        else
            __atomic_add_fetch(&c->other, 1, __ATOMIC_RELAXED);
    }
    free(pe);
    return NULL;
}

/* Streams, cubes and motion proposals: the contracts of the video half of the API. */
static void test_video(const char *model_path) {
    pkgnet_stream_free(NULL);
    pkgnet_stream_options_init(NULL);

    enum { W = 64, H = 48 };
    static uint8_t pixels[H * W * 3], small[(H / 2) * (W / 2) * 3];
    for (size_t i = 0; i < sizeof pixels; i++) pixels[i] = (uint8_t)(i * 7 % 251);
    pkgnet_frame frame = {pixels, W, H, W * 3, PKGNET_PIXEL_BGR};
    pkgnet_frame other = {small, W / 2, H / 2, W / 2 * 3, PKGNET_PIXEL_BGR};
    pkgnet_frame five[5] = {frame, frame, frame, frame, frame};

    /* pkgnet_make_cubes */
    pkgnet_box boxes[3] = {{4, 4, 30, 40}, {NAN, 0, 1, 1}, {10, 10, 5, 20}};
    static uint8_t cubes[3 * 5 * 32 * 32 * 3];
    int32_t problems[3] = {-1, -1, -1};
    CHECK_STATUS(pkgnet_make_cubes(NULL, boxes, 3, 3, "bgr", cubes, sizeof cubes, problems), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_make_cubes(five, boxes, 3, 3, "bgr", cubes, sizeof cubes - 1, problems), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_make_cubes(five, boxes, 3, 2, "bgr", cubes, sizeof cubes, problems), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_make_cubes(five, boxes, 3, 3, "gbr", cubes, sizeof cubes, problems), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_make_cubes(five, boxes, 3, 3, "bgr", cubes, sizeof cubes, problems), PKGNET_OK);
    CHECK(problems[0] == PKGNET_BOX_OK && problems[1] == PKGNET_BOX_NON_FINITE && problems[2] == PKGNET_BOX_INVERTED,
          "box problems %d %d %d", problems[0], problems[1], problems[2]);
    pkgnet_frame mixed[5] = {frame, frame, other, frame, frame};
    CHECK_STATUS(pkgnet_make_cubes(mixed, boxes, 3, 3, "bgr", cubes, sizeof cubes, problems), PKGNET_ERR_INVALID_ARGUMENT);

    /* pkgnet_motion_proposals */
    size_t found = 99;
    pkgnet_box proposals[8];
    CHECK_STATUS(pkgnet_motion_proposals(five, NULL, 0, "nowhere", proposals, 8, &found), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_motion_proposals(five, NULL, 0, NULL, proposals, 8, NULL), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_motion_proposals(five, NULL, 0, NULL, proposals, 8, &found), PKGNET_OK);
    CHECK(found == 0, "identical frames gave %zu motion proposals", found);

    /* streams */
    pkgnet_model *model = NULL;
    CHECK_STATUS(pkgnet_model_load(model_path, &model), PKGNET_OK);
    pkgnet_stream *stream = (pkgnet_stream *)1;
    CHECK_STATUS(pkgnet_stream_create(NULL, NULL, &stream), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK(stream == NULL, "*stream not NULL after a failed create");
    pkgnet_stream_options options;
    pkgnet_stream_options_init(&options);
    options.scene = "nowhere";
    CHECK_STATUS(pkgnet_stream_create(model, &options, &stream), PKGNET_ERR_INVALID_ARGUMENT);
    pkgnet_stream_options_init(&options);
    options.median_window = 4;
    CHECK_STATUS(pkgnet_stream_create(model, &options, &stream), PKGNET_ERR_INVALID_ARGUMENT);
    pkgnet_stream_options_init(&options);
    options.median_window = 1;
    CHECK_STATUS(pkgnet_stream_create(model, &options, &stream), PKGNET_OK);
    pkgnet_model_free(model); /* the stream keeps it alive */

    pkgnet_detection detection = {{4, 4, 40, 44}, 0.9f};
    CHECK_STATUS(pkgnet_stream_push(stream, NULL, &detection, 1), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_stream_push(stream, &frame, NULL, 1), PKGNET_ERR_INVALID_ARGUMENT);
    for (int t = 0; t < 3; t++) {
        CHECK_STATUS(pkgnet_stream_push(stream, &frame, &detection, 1), PKGNET_OK);
        size_t n = 0;
        pkgnet_object_score object;
        pkgnet_frame_score score;
        CHECK_STATUS(pkgnet_stream_objects(stream, NULL, 0, &n), PKGNET_OK);
        CHECK(n == 1, "push %d: %zu objects, want 1", t, n);
        CHECK_STATUS(pkgnet_stream_objects(stream, &object, 1, &n), PKGNET_OK);
        CHECK(object.frame == t && isfinite(object.combined), "push %d: object of frame %lld, combined %g", t,
              (long long)object.frame, object.combined);
        CHECK_STATUS(pkgnet_stream_frame_scores(stream, &score, 1, &n), PKGNET_OK);
        CHECK(n == 1 && score.frame == t && score.raw == object.combined && score.smoothed == score.raw,
              "push %d: %zu frame scores (frame %lld, raw %g, smoothed %g)", t, n, (long long)score.frame,
              score.raw, score.smoothed);
    }
    CHECK_STATUS(pkgnet_stream_push(stream, &other, NULL, 0), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_stream_objects(stream, NULL, 0, NULL), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_stream_objects(stream, NULL, 1, &found), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_stream_push(stream, &frame, NULL, 0), PKGNET_OK); /* a failed push changes nothing */
    pkgnet_frame_score score;
    CHECK_STATUS(pkgnet_stream_frame_scores(stream, &score, 1, &found), PKGNET_OK);
    CHECK(found == 1 && score.frame == 3, "after a refused frame the next one is frame %lld", (long long)score.frame);
    CHECK_STATUS(pkgnet_stream_finish(stream), PKGNET_OK);
    CHECK_STATUS(pkgnet_stream_push(stream, &other, NULL, 0), PKGNET_OK); /* a new clip may change size */
    pkgnet_stream_free(stream);
}

static void test_detector(const char *model_path);

/* ---- training ---- */

struct train_busy_ctx {
    pkgnet_trainer *trainer;
    int ok, busy, other;
};

static void *train_busy_worker(void *arg) {
    struct train_busy_ctx *c = arg;
    for (int i = 0; i < 6; i++) {
        pkgnet_status st = pkgnet_trainer_run_epoch(c->trainer, NULL, NULL, NULL);
        if (st == PKGNET_OK)
            __atomic_add_fetch(&c->ok, 1, __ATOMIC_RELAXED);
        else if (st == PKGNET_ERR_BUSY)
            __atomic_add_fetch(&c->busy, 1, __ATOMIC_RELAXED);
        else
            __atomic_add_fetch(&c->other, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

/* The trainer's contracts. With $PKGNET_TEST_TEACHER naming a resnet20 teacher
 * file (bindings/python/tests/test_train_reference.py sets it), also those of a
 * live trainer; without it only what needs none. Writes no files. */
static void test_training(const char *model_path) {
    pkgnet_train_options o;
    memset(&o, 0xAB, sizeof o);
    pkgnet_train_options_init(&o);
    CHECK(o.k == 2 && o.width == 16 && o.epochs == 120 && o.batch_size == 128 && o.milestone_epoch == 60,
          "defaults k %d width %d epochs %d batch %d milestone %d", o.k, o.width, o.epochs, o.batch_size,
          o.milestone_epoch);
    CHECK(o.learning_rate == 1e-4 && o.learning_rate_decay == 0.8 && o.gradient_power == 3.0,
          "defaults lr %g decay %g power %g", o.learning_rate, o.learning_rate_decay, o.gradient_power);
    CHECK(o.loss_weights[0] == 0.8f && o.loss_weights[1] == 0.1f && o.loss_weights[2] == 0.2f,
          "default loss weights %g %g %g", o.loss_weights[0], o.loss_weights[1], o.loss_weights[2]);
    CHECK(o.gradient_loss_paper == 0 && o.batch_statistics == 0 && o.seed == 0 && o.threads == 0 &&
              o.top_k == 3 && o.median_window == 19 && o.input_channel_order == 0,
          "defaults paper %d batch %d seed %llu threads %d top_k %d median %d order %d", o.gradient_loss_paper,
          o.batch_statistics, (unsigned long long)o.seed, o.threads, o.top_k, o.median_window,
          o.input_channel_order);
    CHECK(o.pairs == NULL && o.scene == NULL && o.score_weights == NULL && o.score_weight_count == 0,
          "default pairs, scene or score weights not NULL/0");
    CHECK(o.teacher_cache_bytes == (size_t)2 << 30, "default teacher cache %zu", o.teacher_cache_bytes);
    int reserved_null = 1;
    for (int i = 0; i < 8; i++)
        reserved_null &= o.reserved[i] == NULL;
    CHECK(reserved_null, "pkgnet_train_options_init left reserved[] non-NULL");
    pkgnet_train_options_init(NULL);
    pkgnet_trainer_free(NULL);
    CHECK(pkgnet_trainer_epochs_done(NULL) == -1, "epochs_done(NULL) = %d", pkgnet_trainer_epochs_done(NULL));

    enum { TN = 4 };
    const size_t cube_bytes = (size_t)CUBE_PIXELS * 3;
    uint8_t *cubes = malloc(TN * cube_bytes);
    make_cubes(cubes, TN * cube_bytes, 21);
    pkgnet_epoch_report report;
    static char sentinel;
    pkgnet_trainer *t = (pkgnet_trainer *)&sentinel; /* not NULL: a failed create must clear it */
    CHECK_STATUS(pkgnet_trainer_create(model_path, cubes, TN, 3, &o, NULL), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_trainer_create(NULL, cubes, TN, 3, &o, &t), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK(t == NULL, "*trainer not NULL after a failed create");
    CHECK_STATUS(pkgnet_trainer_create(model_path, NULL, TN, 3, &o, &t), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_trainer_create(model_path, cubes, 0, 3, &o, &t), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_trainer_create(model_path, cubes, TN, 2, &o, &t), PKGNET_ERR_INVALID_ARGUMENT);
    o.k = 3;
    CHECK_STATUS(pkgnet_trainer_create(model_path, cubes, TN, 3, &o, &t), PKGNET_ERR_INVALID_ARGUMENT);
    pkgnet_train_options_init(&o);
    o.pairs = "d8";
    CHECK_STATUS(pkgnet_trainer_create(model_path, cubes, TN, 3, &o, &t), PKGNET_ERR_INVALID_ARGUMENT);
    /* A model file holds a teacher but is not a teacher file. */
    CHECK_STATUS(pkgnet_trainer_create(model_path, cubes, TN, 3, NULL, &t), PKGNET_ERR_FORMAT);
    CHECK(t == NULL, "*trainer not NULL after a failed create");
    CHECK_STATUS(pkgnet_trainer_run_epoch(NULL, NULL, NULL, &report), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_trainer_save_checkpoint(NULL, "x.ckpt"), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_trainer_resume(NULL, "x.ckpt"), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_trainer_write_model(NULL, "x.safetensors", 1), PKGNET_ERR_INVALID_ARGUMENT);

    const char *teacher = getenv("PKGNET_TEST_TEACHER");
    if (teacher != NULL && teacher[0] != '\0') {
        pkgnet_train_options_init(&o);
        o.pairs = "d8:layer3";
        o.batch_size = TN;
        o.epochs = 1000;
        o.threads = 1;
        CHECK_STATUS(pkgnet_trainer_create(teacher, cubes, TN, 3, &o, &t), PKGNET_OK);
        if (t != NULL) {
            CHECK(pkgnet_trainer_epochs_done(t) == 0, "epochs_done = %d before training", pkgnet_trainer_epochs_done(t));
            CHECK_STATUS(pkgnet_trainer_run_epoch(t, NULL, NULL, NULL), PKGNET_OK);
            memset(&report, 0, sizeof report);
            CHECK_STATUS(pkgnet_trainer_run_epoch(t, NULL, NULL, &report), PKGNET_OK);
            CHECK(report.epoch == 2 && pkgnet_trainer_epochs_done(t) == 2 && isfinite(report.loss) &&
                      report.loss > 0 && report.learning_rate == 1e-4,
                  "report epoch %d loss %g lr %g, epochs_done %d", report.epoch, report.loss, report.learning_rate,
                  pkgnet_trainer_epochs_done(t));
            CHECK_STATUS(pkgnet_trainer_save_checkpoint(t, NULL), PKGNET_ERR_INVALID_ARGUMENT);
            CHECK_STATUS(pkgnet_trainer_resume(t, NULL), PKGNET_ERR_INVALID_ARGUMENT);
            CHECK_STATUS(pkgnet_trainer_write_model(t, NULL, 0), PKGNET_ERR_INVALID_ARGUMENT);
            CHECK_STATUS(pkgnet_trainer_resume(t, "/nonexistent/pkgnet.ckpt"), PKGNET_ERR_IO);
            CHECK_STATUS(pkgnet_trainer_write_model(t, "/nonexistent/pkgnet.safetensors", 0), PKGNET_ERR_IO);

            /* Two threads on one trainer: each call either runs or is refused as busy. */
            struct train_busy_ctx ctx = {t, 0, 0, 0};
            pthread_t t1, t2;
            pthread_create(&t1, NULL, train_busy_worker, &ctx);
            pthread_create(&t2, NULL, train_busy_worker, &ctx);
            pthread_join(t1, NULL);
            pthread_join(t2, NULL);
            CHECK(ctx.other == 0, "%d concurrent epochs failed with neither OK nor BUSY", ctx.other);
            CHECK(ctx.ok > 0 && pkgnet_trainer_epochs_done(t) == 2 + ctx.ok, "%d epochs ran, epochs_done %d",
                  ctx.ok, pkgnet_trainer_epochs_done(t));
            printf("note: concurrent epochs on one trainer: %d ok, %d busy\n", ctx.ok, ctx.busy);
            pkgnet_trainer_free(t);
        }
    }
    free(cubes);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.safetensors\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[1];

    /* ---- version and names ---- */
    {
        char want[32];
        snprintf(want, sizeof want, "%d.%d.%d", PKGNET_VERSION_MAJOR, PKGNET_VERSION_MINOR,
                 PKGNET_VERSION_PATCH);
        const char *v = pkgnet_version();
        CHECK(v != NULL && strcmp(v, want) == 0, "pkgnet_version() = %s, macros say %s", v ? v : "(null)", want);
        CHECK(strcmp(PKGNET_VERSION_STRING, want) == 0, "PKGNET_VERSION_STRING = %s", PKGNET_VERSION_STRING);

        static const char *names[] = {
            "PKGNET_OK", "PKGNET_ERR_INVALID_ARGUMENT", "PKGNET_ERR_IO", "PKGNET_ERR_FORMAT",
            "PKGNET_ERR_UNSUPPORTED", "PKGNET_ERR_MODEL_MISMATCH", "PKGNET_ERR_OUT_OF_MEMORY",
            "PKGNET_ERR_BACKEND", "PKGNET_ERR_BUSY", "PKGNET_ERR_INTERNAL",
        };
        for (int s = 0; s <= PKGNET_ERR_INTERNAL; s++) {
            const char *name = pkgnet_status_name((pkgnet_status)s);
            CHECK(name != NULL && strcmp(name, names[s]) == 0, "pkgnet_status_name(%d) = %s", s,
                  name ? name : "(null)");
        }
        const char *unknown = pkgnet_status_name((pkgnet_status)1234);
        CHECK(unknown != NULL && unknown[0] != '\0', "pkgnet_status_name(1234) must be a non-empty string");

        const char *sys = pkgnet_system_info();
        CHECK(sys != NULL && sys[0] != '\0', "pkgnet_system_info() empty");

        int fresh = 0;
        pthread_t t;
        pthread_create(&t, NULL, fresh_thread_error, &fresh);
        pthread_join(t, NULL);
        CHECK(fresh, "pkgnet_last_error() on a thread with no failure must be \"\"");
    }

    /* ---- NULL-tolerant frees ---- */
    pkgnet_model_free(NULL);
    pkgnet_session_free(NULL);
    passed++;

    /* ---- loading errors ---- */
    {
        pkgnet_model *m = (pkgnet_model *)&passed; /* must be reset to NULL on failure */
        CHECK_STATUS(pkgnet_model_load(NULL, &m), PKGNET_ERR_INVALID_ARGUMENT);
        CHECK(m == NULL, "*model not NULL after a failed load");
        CHECK_STATUS(pkgnet_model_load(model_path, NULL), PKGNET_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(pkgnet_model_load_from_memory(NULL, 100, &m), PKGNET_ERR_INVALID_ARGUMENT);

        m = (pkgnet_model *)&passed;
        CHECK_STATUS(pkgnet_model_load("/nonexistent/pkgnet/model.safetensors", &m), PKGNET_ERR_IO);
        CHECK(m == NULL, "*model not NULL after a missing file");

        static const char garbage[] = "this is not a safetensors file, just some text long enough";
        char *gpath = temp_file(garbage, sizeof garbage);
        CHECK(gpath != NULL, "could not write a temp file");
        if (gpath) {
            m = (pkgnet_model *)&passed;
            CHECK_STATUS(pkgnet_model_load(gpath, &m), PKGNET_ERR_FORMAT);
            CHECK(m == NULL, "*model not NULL after a garbage file");
            unlink(gpath);
        }
        char *epath = temp_file("", 0);
        if (epath) {
            CHECK_STATUS(pkgnet_model_load(epath, &m), PKGNET_ERR_FORMAT);
            unlink(epath);
        }
        CHECK_STATUS(pkgnet_model_load_from_memory(garbage, sizeof garbage, &m), PKGNET_ERR_FORMAT);

        size_t size = 0;
        unsigned char *image = read_file(model_path, &size);
        CHECK(image != NULL && size > 16, "cannot read %s", model_path);
        if (image && size > 16) {
            /* Cut in the data section, and inside the JSON header. */
            CHECK_STATUS(pkgnet_model_load_from_memory(image, size / 2, &m), PKGNET_ERR_FORMAT);
            CHECK_STATUS(pkgnet_model_load_from_memory(image, 12, &m), PKGNET_ERR_FORMAT);
            char *tpath = temp_file(image, size - 1);
            if (tpath) {
                CHECK_STATUS(pkgnet_model_load(tpath, &m), PKGNET_ERR_FORMAT);
                unlink(tpath);
            }
            /* A model loaded from memory must not need the bytes afterwards. */
            pkgnet_model *mm = NULL;
            CHECK_STATUS(pkgnet_model_load_from_memory(image, size, &mm), PKGNET_OK);
            memset(image, 0xAB, size);
            free(image);
            if (mm) {
                pkgnet_model_info info;
                CHECK_STATUS(pkgnet_model_get_info(mm, &info), PKGNET_OK);
                pkgnet_model_free(mm);
            }
        } else {
            free(image);
        }
    }

    /* ---- a working model ---- */
    pkgnet_model *model = NULL;
    CHECK_STATUS(pkgnet_model_load(model_path, &model), PKGNET_OK);
    if (!model) {
        printf("cannot go on without a model\n%d passed, %d failed\n", passed, failed);
        return 1;
    }
    pkgnet_model_info info;
    memset(&info, 0, sizeof info);
    CHECK_STATUS(pkgnet_model_get_info(NULL, &info), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_model_get_info(model, NULL), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_model_get_info(model, &info), PKGNET_OK);
    CHECK(info.k == 1 || info.k == 2, "k = %d", info.k);
    CHECK(info.width > 0, "width = %d", info.width);
    CHECK(info.channels == 1 || info.channels == 3, "channels = %d", info.channels);
    CHECK(info.pairs >= 1 && info.pairs <= PKGNET_MAX_PAIRS, "pairs = %d", info.pairs);
    CHECK(info.pairs == info.k, "pairs = %d for k = %d", info.pairs, info.k);
    for (int j = 0; j < info.pairs && j < PKGNET_MAX_PAIRS; j++)
        CHECK(info.pair_size[j] == 4 || info.pair_size[j] == 8, "pair_size[%d] = %d", j, info.pair_size[j]);
    CHECK(info.task && (strcmp(info.task, "pred") == 0 || strcmp(info.task, "recon") == 0), "task = %s",
          info.task ? info.task : "(null)");
    CHECK(info.input_frames == (info.task && strcmp(info.task, "recon") == 0 ? 1 : 4), "input_frames = %d",
          info.input_frames);
    CHECK(info.teacher && info.teacher[0], "teacher empty");
    CHECK(info.channel_order && (strcmp(info.channel_order, "bgr") == 0 || strcmp(info.channel_order, "rgb") == 0),
          "channel_order = %s", info.channel_order ? info.channel_order : "(null)");
    int pairs = info.pairs < 1 ? 1 : (info.pairs > PKGNET_MAX_PAIRS ? PKGNET_MAX_PAIRS : info.pairs);
    int channels = info.channels == 1 ? 1 : 3;

    /* ---- sessions ---- */
    pkgnet_session *session = (pkgnet_session *)&passed;
    CHECK_STATUS(pkgnet_session_create(NULL, 0, &session), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK(session == NULL, "*session not NULL after a failed create");
    CHECK_STATUS(pkgnet_session_create(model, 0, NULL), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_session_create(model, -1, &session), PKGNET_ERR_INVALID_ARGUMENT);
    session = NULL;
    CHECK_STATUS(pkgnet_session_create(model, 0, &session), PKGNET_OK);
    if (!session) {
        printf("cannot go on without a session\n%d passed, %d failed\n", passed, failed);
        return 1;
    }
    CHECK_STATUS(pkgnet_session_set_threads(NULL, 1), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_session_set_threads(session, -3), PKGNET_ERR_INVALID_ARGUMENT);

    /* ---- scoring ---- */
    enum { N = 6 };
    size_t cube_bytes = (size_t)CUBE_PIXELS * channels;
    size_t size = N * cube_bytes;
    uint8_t *cubes = malloc(size);
    make_cubes(cubes, size, 7);
    float pe[N], comb[N], inc[N * PKGNET_MAX_PAIRS];
    float *pred = malloc((size_t)N * channels * 32 * 32 * sizeof(float));
    float *emap = malloc((size_t)N * 32 * 32 * sizeof(float));
    float *imap[PKGNET_MAX_PAIRS] = {0};
    for (int j = 0; j < pairs; j++)
        imap[j] = malloc((size_t)N * 64 * sizeof(float));

    pkgnet_outputs out;
    memset(&out, 0, sizeof out);
    out.capacity = N;
    out.prediction_error = pe;
    out.inconsistency = inc;
    out.combined = comb;
    out.prediction = pred;
    out.error_map = emap;
    for (int j = 0; j < pairs; j++)
        out.inconsistency_map[j] = imap[j];

    CHECK_STATUS(pkgnet_score_u8(NULL, cubes, N, size, &out), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_score_u8(session, NULL, N, size, &out), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_score_u8(session, cubes, N, size, NULL), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_score_u8(session, cubes, N, size - 1, &out), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_score_u8(session, cubes, N, size + cube_bytes, &out), PKGNET_ERR_INVALID_ARGUMENT);
    out.capacity = N - 1;
    CHECK_STATUS(pkgnet_score_u8(session, cubes, N, size, &out), PKGNET_ERR_INVALID_ARGUMENT);
    out.capacity = N;
    CHECK_STATUS(pkgnet_score_f32(NULL, pred, 1, 1, &out), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_score_f32(session, NULL, N, size, &out), PKGNET_ERR_INVALID_ARGUMENT);

    /* n = 0 is a valid, empty batch, even with capacity 0. */
    {
        pkgnet_outputs empty;
        memset(&empty, 0, sizeof empty);
        float dummy = -1.0f;
        empty.prediction_error = &dummy;
        CHECK_STATUS(pkgnet_score_u8(session, cubes, 0, 0, &empty), PKGNET_OK);
        CHECK(dummy == -1.0f, "n = 0 wrote an output");
        float f = 0.5f;
        CHECK_STATUS(pkgnet_score_f32(session, &f, 0, 0, &empty), PKGNET_OK);
    }

    CHECK_STATUS(pkgnet_score_u8(session, cubes, N, size, &out), PKGNET_OK);
    int finite = 1;
    for (int i = 0; i < N; i++) {
        finite &= isfinite(pe[i]) && isfinite(comb[i]);
        for (int j = 0; j < pairs; j++)
            finite &= isfinite(inc[i * pairs + j]);
    }
    for (size_t i = 0; i < (size_t)N * channels * 32 * 32; i++)
        finite &= isfinite(pred[i]);
    CHECK(finite, "non-finite scores");
    /* S_e is the mean of the error map over pixels (the map already averages channels). */
    for (int i = 0; i < N; i++) {
        double s = 0;
        for (int p = 0; p < 32 * 32; p++)
            s += emap[i * 1024 + p];
        CHECK(close_rel((float)(s / 1024), pe[i], 1e-4f), "cube %d: mean(error_map) %g != prediction_error %g", i,
              s / 1024, pe[i]);
    }
    for (int j = 0; j < pairs; j++) {
        int sz = info.pair_size[j];
        for (int i = 0; i < N; i++) {
            double s = 0;
            for (int p = 0; p < sz * sz; p++)
                s += imap[j][i * sz * sz + p];
            CHECK(close_rel((float)(s / (sz * sz)), inc[i * pairs + j], 1e-4f),
                  "cube %d pair %d: mean(inconsistency_map) %g != inconsistency %g", i, j, s / (sz * sz),
                  inc[i * pairs + j]);
        }
    }

    /* Outputs left NULL are skipped; the others are identical. */
    {
        float pe2[N];
        pkgnet_outputs only;
        memset(&only, 0, sizeof only);
        only.capacity = N;
        only.prediction_error = pe2;
        CHECK_STATUS(pkgnet_score_u8(session, cubes, N, size, &only), PKGNET_OK);
        CHECK(memcmp(pe, pe2, sizeof pe) == 0, "prediction_error differs when fewer outputs are asked for");
    }

    /* The float layout [n][5C][32][32] of the same pixels gives the same scores. */
    {
        size_t count = (size_t)N * 5 * channels * 32 * 32;
        float *fcubes = malloc(count * sizeof(float));
        for (int i = 0; i < N; i++)
            for (int t = 0; t < 5; t++)
                for (int y = 0; y < 32; y++)
                    for (int x = 0; x < 32; x++)
                        for (int c = 0; c < channels; c++)
                            fcubes[(((size_t)i * 5 * channels + t * channels + c) * 32 + y) * 32 + x] =
                                cubes[((((size_t)i * 5 + t) * 32 + y) * 32 + x) * channels + c] / 255.0f;
        float pe3[N], comb3[N], inc3[N * PKGNET_MAX_PAIRS];
        pkgnet_outputs fo;
        memset(&fo, 0, sizeof fo);
        fo.capacity = N;
        fo.prediction_error = pe3;
        fo.inconsistency = inc3;
        fo.combined = comb3;
        CHECK_STATUS(pkgnet_score_f32(session, fcubes, N, count, &fo), PKGNET_OK);
        int same = 1;
        for (int i = 0; i < N; i++) {
            same &= close_rel(pe[i], pe3[i], 1e-5f);
            for (int j = 0; j < pairs; j++)
                same &= close_rel(inc[i * pairs + j], inc3[i * pairs + j], 1e-5f);
        }
        CHECK(same, "u8 and f32 inputs disagree");
        CHECK_STATUS(pkgnet_score_f32(session, fcubes, N, count - 1, &fo), PKGNET_ERR_INVALID_ARGUMENT);

        fcubes[count / 2] = NAN;
        CHECK_STATUS(pkgnet_score_f32(session, fcubes, N, count, &fo), PKGNET_ERR_INVALID_ARGUMENT);
        fcubes[count / 2] = INFINITY;
        CHECK_STATUS(pkgnet_score_f32(session, fcubes, N, count, &fo), PKGNET_ERR_INVALID_ARGUMENT);
        free(fcubes);
    }

    /* Thread count changes speed, not results (beyond summation order). */
    {
        float pe4[N];
        pkgnet_outputs o;
        memset(&o, 0, sizeof o);
        o.capacity = N;
        o.prediction_error = pe4;
        CHECK_STATUS(pkgnet_session_set_threads(session, 1), PKGNET_OK);
        CHECK_STATUS(pkgnet_score_u8(session, cubes, N, size, &o), PKGNET_OK);
        int same = 1;
        for (int i = 0; i < N; i++)
            same &= close_rel(pe[i], pe4[i], 1e-5f);
        CHECK(same, "1 thread and the default disagree");
        CHECK_STATUS(pkgnet_session_set_threads(session, 0), PKGNET_OK);
    }

    /* Two threads on one session: each call either runs or is refused as busy. */
    {
        enum { BN = 32 };
        uint8_t *big = malloc(BN * cube_bytes);
        make_cubes(big, BN * cube_bytes, 11);
        struct busy_ctx ctx = {session, big, BN, BN * cube_bytes, 0, 0, 0};
        pthread_t t1, t2;
        pthread_create(&t1, NULL, busy_worker, &ctx);
        pthread_create(&t2, NULL, busy_worker, &ctx);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        CHECK(ctx.other == 0, "%d concurrent calls failed with neither OK nor BUSY", ctx.other);
        CHECK(ctx.ok > 0, "no concurrent call succeeded");
        printf("note: concurrent calls on one session: %d ok, %d busy\n", ctx.ok, ctx.busy);
        free(big);
    }

    /* The session keeps the model alive: free the model first, then score. */
    {
        pkgnet_session *second = NULL;
        CHECK_STATUS(pkgnet_session_create(model, 1, &second), PKGNET_OK);
        pkgnet_model_free(model);
        model = NULL;
        float pe5[N], inc5[N * PKGNET_MAX_PAIRS];
        pkgnet_outputs o;
        memset(&o, 0, sizeof o);
        o.capacity = N;
        o.prediction_error = pe5;
        o.inconsistency = inc5;
        CHECK_STATUS(pkgnet_score_u8(session, cubes, N, size, &o), PKGNET_OK);
        CHECK(memcmp(pe, pe5, sizeof pe) == 0, "scores changed after the model was freed");
        if (second) {
            CHECK_STATUS(pkgnet_score_u8(second, cubes, N, size, &o), PKGNET_OK);
            int same = 1;
            for (int i = 0; i < N; i++)
                same &= close_rel(pe[i], pe5[i], 1e-5f);
            CHECK(same, "second session after model free disagrees");
            pkgnet_session_free(second);
        }
    }
    pkgnet_session_free(session);

    free(cubes);
    free(pred);
    free(emap);
    for (int j = 0; j < pairs; j++)
        free(imap[j]);

    test_video(model_path);
    test_training(model_path);
    test_detector(model_path);

    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

/* ---- the built-in detector (pkgnet_detector_*) ---- */

/* A 2-layer darknet network: a 3x3 stride-4 convolution to 14 channels and
 * a [yolo] head of 2 anchors x (5 + 2 classes) on an 8x8 grid. */
static const char detector_cfg[] =
    "[net]\nwidth=32\nheight=32\nchannels=3\n\n"
    "[convolutional]\nfilters=14\nsize=3\nstride=4\npad=1\nactivation=leaky\n\n"
    "[yolo]\nmask=0,1\nanchors=6,8,14,12\nclasses=2\n";
#define DETECTOR_FLOATS (14 + 14 * 27)

static void test_detector(const char *model_path) {
    pkgnet_detector_free(NULL);
    pkgnet_detector_options_init(NULL);

    unsigned char weights[20 + 4 * DETECTOR_FLOATS];
    const int32_t version[3] = {0, 2, 5};
    memset(weights, 0, sizeof weights);
    memcpy(weights, version, sizeof version);
    uint32_t x = 12345;
    for (int i = 0; i < DETECTOR_FLOATS; i++) {
        x = x * 1664525u + 1013904223u;
        float v = ((float)(x >> 8) / 16777216.0f - 0.5f) * 0.6f;
        memcpy(weights + 20 + 4 * i, &v, 4);
    }
    /* Confident objects: biases of 3 on both anchors' objectness and class channels. */
    const int confident[6] = {4, 5, 6, 11, 12, 13};
    const float three = 3.0f;
    for (int i = 0; i < 6; i++) memcpy(weights + 20 + 4 * confident[i], &three, 4);
    char cfg_path[4096], weights_path[4096], bad_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s", temp_file(detector_cfg, strlen(detector_cfg)));
    snprintf(weights_path, sizeof weights_path, "%s", temp_file(weights, sizeof weights));

    /* Loading errors: a status and a message naming the file and what is wrong. */
    pkgnet_detector *detector = (pkgnet_detector *)1;
    CHECK_STATUS(pkgnet_detector_load(NULL, weights_path, &detector), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK(detector == NULL, "*detector not NULL after a failed load");
    CHECK_STATUS(pkgnet_detector_load(cfg_path, weights_path, NULL), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_detector_load("/nonexistent/net.cfg", weights_path, &detector), PKGNET_ERR_IO);
    CHECK(strstr(pkgnet_last_error(), "/nonexistent/net.cfg") != NULL, "message: %s", pkgnet_last_error());
    {
        char region[512];
        snprintf(region, sizeof region, "%s\n[region]\nclasses=2\n", detector_cfg);
        snprintf(bad_path, sizeof bad_path, "%s", temp_file(region, strlen(region)));
        CHECK_STATUS(pkgnet_detector_load(bad_path, weights_path, &detector), PKGNET_ERR_UNSUPPORTED);
        const char *msg = pkgnet_last_error();
        CHECK(strstr(msg, bad_path) && strstr(msg, ":18:") && strstr(msg, "layer 2 [region]"), "message: %s", msg);
        unlink(bad_path);
        snprintf(bad_path, sizeof bad_path, "%s", temp_file(weights, sizeof weights - 6));
        CHECK_STATUS(pkgnet_detector_load(cfg_path, bad_path, &detector), PKGNET_ERR_MODEL_MISMATCH);
        msg = pkgnet_last_error();
        CHECK(strstr(msg, bad_path) && strstr(msg, "layer 0 [convolutional]"), "message: %s", msg);
        unlink(bad_path);
        snprintf(bad_path, sizeof bad_path, "%s", temp_file("[net]\nwidth=32\n\x01\x02\n", 18));
        CHECK_STATUS(pkgnet_detector_load(bad_path, weights_path, &detector), PKGNET_ERR_FORMAT);
        unlink(bad_path);
    }

    CHECK_STATUS(pkgnet_detector_load(cfg_path, weights_path, &detector), PKGNET_OK);
    unlink(cfg_path);
    unlink(weights_path);
    if (detector == NULL)
        return;
    pkgnet_detector_info info;
    CHECK_STATUS(pkgnet_detector_get_info(NULL, &info), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_detector_get_info(detector, &info), PKGNET_OK);
    CHECK(info.input_width == 32 && info.input_height == 32 && info.classes == 2 && info.heads == 1 &&
              info.layers == 2 && info.parameters == DETECTOR_FLOATS,
          "info %dx%d, %d classes, %d heads, %d layers, %zu parameters", info.input_width, info.input_height,
          info.classes, info.heads, info.layers, info.parameters);

    enum { W = 40, H = 30 };
    static uint8_t pixels[H * W * 3];
    for (size_t i = 0; i < sizeof pixels; i++) pixels[i] = (uint8_t)(i * 13 % 251);
    pkgnet_frame frame = {pixels, W, H, W * 3, PKGNET_PIXEL_BGR};
    pkgnet_detector_options options;
    pkgnet_detector_options_init(&options);
    CHECK(options.confidence == 0.25f && options.nms_threshold == 0.45f && options.classes == NULL &&
              options.n_classes == 0 && options.threads == 0, "option defaults");

    /* Every candidate: threshold 0, no suppression: 2 anchors x 8 x 8. */
    options.confidence = 0;
    options.nms_threshold = 1;
    size_t count = 99;
    pkgnet_detected_object objects[4];
    CHECK_STATUS(pkgnet_detector_detect(detector, &frame, &options, NULL, 0, NULL), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_detector_detect(detector, NULL, &options, NULL, 0, &count), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_detector_detect(detector, &frame, &options, NULL, 4, &count), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_detector_detect(detector, &frame, &options, NULL, 0, &count), PKGNET_OK);
    CHECK(count == 128, "%zu candidates, want 128", count);
    CHECK_STATUS(pkgnet_detector_detect(detector, &frame, &options, objects, 4, &count), PKGNET_OK);
    CHECK(count == 128, "%zu candidates with a small buffer, want 128", count);
    int ordered = 1, inside = 1;
    for (int i = 0; i < 4; i++) {
        ordered &= i == 0 || objects[i].confidence <= objects[i - 1].confidence;
        inside &= objects[i].box.x1 >= 0 && objects[i].box.x2 <= W && objects[i].box.y1 >= 0 && objects[i].box.y2 <= H &&
                  objects[i].class_id >= 0 && objects[i].class_id < 2;
    }
    CHECK(ordered && inside, "objects out of order or outside the frame");

    /* Bad options. */
    const int32_t wrong_class[1] = {2}, second_class[1] = {1};
    pkgnet_detector_options bad = options;
    bad.confidence = 2;
    CHECK_STATUS(pkgnet_detector_detect(detector, &frame, &bad, NULL, 0, &count), PKGNET_ERR_INVALID_ARGUMENT);
    bad = options;
    bad.nms_threshold = NAN;
    CHECK_STATUS(pkgnet_detector_detect(detector, &frame, &bad, NULL, 0, &count), PKGNET_ERR_INVALID_ARGUMENT);
    bad = options;
    bad.n_classes = 3;
    CHECK_STATUS(pkgnet_detector_detect(detector, &frame, &bad, NULL, 0, &count), PKGNET_ERR_INVALID_ARGUMENT);
    bad.classes = wrong_class;
    bad.n_classes = 1;
    CHECK_STATUS(pkgnet_detector_detect(detector, &frame, &bad, NULL, 0, &count), PKGNET_ERR_INVALID_ARGUMENT);
    bad.n_classes = 0;
    CHECK_STATUS(pkgnet_detector_detect(detector, &frame, &bad, NULL, 0, &count), PKGNET_ERR_INVALID_ARGUMENT);
    bad = options;
    bad.threads = -1;
    CHECK_STATUS(pkgnet_detector_detect(detector, &frame, &bad, NULL, 0, &count), PKGNET_ERR_INVALID_ARGUMENT);
    pkgnet_frame broken = frame;
    broken.stride = 3;
    CHECK_STATUS(pkgnet_detector_detect(detector, &broken, NULL, NULL, 0, &count), PKGNET_ERR_INVALID_ARGUMENT);

    /* A class filter keeps every candidate, as that class. */
    pkgnet_detector_options one = options;
    one.classes = second_class;
    one.n_classes = 1;
    CHECK_STATUS(pkgnet_detector_detect(detector, &frame, &one, objects, 4, &count), PKGNET_OK);
    CHECK(count == 128 && objects[0].class_id == 1 && objects[3].class_id == 1, "class filter: %zu objects", count);

    /* Raw head outputs. */
    int shape[3] = {0, 0, 0};
    static float raw[14 * 8 * 8];
    CHECK_STATUS(pkgnet_detector_raw_output(detector, &frame, 1, 0, raw, 896, &count, shape), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_detector_raw_output(detector, &frame, 0, 0, raw, 896, &count, NULL), PKGNET_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(pkgnet_detector_raw_output(detector, &frame, 0, 0, NULL, 0, &count, shape), PKGNET_OK);
    CHECK(count == 896 && shape[0] == 14 && shape[1] == 8 && shape[2] == 8, "raw output %zu floats, %dx%dx%d", count,
          shape[0], shape[1], shape[2]);
    CHECK_STATUS(pkgnet_detector_raw_output(detector, &frame, 0, 1, raw, 896, &count, shape), PKGNET_OK);
    int finite = 1;
    for (int i = 0; i < 896; i++) finite &= isfinite(raw[i]);
    CHECK(finite, "raw output not finite");

    /* Streams: the stream keeps the network; the detector may go first. */
    CHECK_STATUS(pkgnet_stream_set_detector(NULL, detector, NULL), PKGNET_ERR_INVALID_ARGUMENT);
    pkgnet_model *model = NULL;
    CHECK_STATUS(pkgnet_model_load(model_path, &model), PKGNET_OK);
    pkgnet_stream *stream = NULL;
    pkgnet_stream_options stream_options;
    pkgnet_stream_options_init(&stream_options);
    stream_options.median_window = 1;
    stream_options.scene = "shanghaitech"; /* its 8x8 minimum area keeps small boxes */
    CHECK_STATUS(pkgnet_stream_create(model, &stream_options, &stream), PKGNET_OK);
    pkgnet_model_free(model);
    CHECK_STATUS(pkgnet_stream_set_detector(stream, detector, &bad), PKGNET_ERR_INVALID_ARGUMENT);
    one.confidence = 0.5f;
    one.nms_threshold = 0.45f;
    CHECK_STATUS(pkgnet_stream_set_detector(stream, detector, &one), PKGNET_OK);
    size_t expected = 0;
    CHECK_STATUS(pkgnet_detector_detect(detector, &frame, &one, NULL, 0, &expected), PKGNET_OK);
    pkgnet_detector_free(detector);
    CHECK_STATUS(pkgnet_stream_push(stream, &frame, NULL, 0), PKGNET_OK);
    size_t scored = 0, skipped = 0;
    CHECK_STATUS(pkgnet_stream_objects(stream, NULL, 0, &scored), PKGNET_OK);
    CHECK_STATUS(pkgnet_stream_skipped(stream, NULL, NULL, 0, &skipped), PKGNET_OK);
    CHECK(expected > 0 && scored > 0 && scored + skipped <= expected,
          "the detector found %zu objects, the stream scored %zu (skipped %zu)", expected, scored, skipped);
    CHECK_STATUS(pkgnet_stream_set_detector(stream, NULL, NULL), PKGNET_OK);
    CHECK_STATUS(pkgnet_stream_push(stream, &frame, NULL, 0), PKGNET_OK);
    CHECK_STATUS(pkgnet_stream_objects(stream, NULL, 0, &scored), PKGNET_OK);
    CHECK(scored == 0, "without its detector the stream scored %zu objects", scored);
    pkgnet_stream_free(stream);
}
