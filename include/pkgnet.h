/*
 * pkgnet.h - video anomaly scoring with PKG-Net (Prior Knowledge Guided Network).
 *
 * One self-contained header for libpkgnet.so. A model file (safetensors, see
 * docs/model-format.md) holds a student U-Net that predicts the next 32x32 crop
 * of an object from its 4 past crops, and a frozen teacher CNN whose features
 * the student imitates. An object cube (the same box cropped from 5
 * consecutive frames) scores high when the student predicts its newest crop
 * badly (prediction error) or disagrees with the teacher (inconsistency).
 *
 * Usage:
 *
 *     #include <pkgnet.h>
 *
 *     pkgnet_model *model = NULL;
 *     if (pkgnet_model_load("model.safetensors", &model) != PKGNET_OK) {
 *         fprintf(stderr, "%s\n", pkgnet_last_error());
 *         return 1;
 *     }
 *     pkgnet_session *session = NULL;
 *     pkgnet_session_create(model, 0, &session);   // 0 threads = default
 *
 *     // n cubes of 5 frames (oldest first), 32x32, HWC, channels of the model
 *     float combined[n];
 *     pkgnet_outputs out = {0};
 *     out.capacity = n;
 *     out.combined = combined;
 *     if (pkgnet_score_u8(session, cubes, n, n * 5 * 32 * 32 * 3, &out) != PKGNET_OK)
 *         fprintf(stderr, "%s\n", pkgnet_last_error());
 *
 *     pkgnet_session_free(session);
 *     pkgnet_model_free(model);
 *
 * Errors: every fallible call returns a pkgnet_status, PKGNET_OK (0) on success. The
 * message of the last failed call on the calling thread is pkgnet_last_error().
 * No call aborts or exits the process on bad input.
 *
 * Threads: a pkgnet_model is immutable once loaded and may be shared by any
 * number of threads. A pkgnet_session holds scratch memory and is used by one
 * thread at a time (a second concurrent call on the same session returns
 * PKGNET_ERR_BUSY); create one session per thread. A session keeps its model
 * alive: the model may be freed before its sessions.
 */
#ifndef PKGNET_H
#define PKGNET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PKGNET_VERSION_MAJOR 0
#define PKGNET_VERSION_MINOR 1
#define PKGNET_VERSION_PATCH 0
#define PKGNET_VERSION_STRING "0.1.0"

/* Side of the square crops the networks take. */
#define PKGNET_CROP_SIZE 32
/* Frames in one object cube: 4 past frames and the frame to predict. */
#define PKGNET_CUBE_FRAMES 5
/* Largest number of distilled student/teacher feature pairs of a model. */
#define PKGNET_MAX_PAIRS 4

typedef enum pkgnet_status {
    PKGNET_OK = 0,
    PKGNET_ERR_INVALID_ARGUMENT = 1, /* NULL pointer, bad count or size, non-finite input */
    PKGNET_ERR_IO = 2,               /* a file could not be opened, read or mapped */
    PKGNET_ERR_FORMAT = 3,           /* a model file is malformed (header, JSON, offsets) */
    PKGNET_ERR_UNSUPPORTED = 4,      /* well-formed but not supported (version, dtype, arch) */
    PKGNET_ERR_MODEL_MISMATCH = 5,   /* tensors missing, extra or of the wrong shape */
    PKGNET_ERR_OUT_OF_MEMORY = 6,    /* an allocation failed */
    PKGNET_ERR_BACKEND = 7,          /* the BLAS or OpenMP runtime could not be loaded */
    PKGNET_ERR_BUSY = 8,             /* the session is in use by another thread */
    PKGNET_ERR_INTERNAL = 9          /* a bug in pkgnet: please report it */
} pkgnet_status;

/* A loaded model: immutable, shareable across threads. */
typedef struct pkgnet_model pkgnet_model;
/* Per-thread scratch for scoring with one model. */
typedef struct pkgnet_session pkgnet_session;

/* What a model file describes. Strings point into the model and live as long as it. */
typedef struct pkgnet_model_info {
    int k;                    /* downsampling kind of the student: 1 (strided conv) or 2 (maxpool) */
    int width;                /* base width w of the student */
    int channels;             /* C: 3 (colour) or 1 (grey) */
    int input_frames;         /* frames the student sees: 4 (task "pred") or 1 (task "recon") */
    int pairs;                /* distilled feature pairs K */
    int pair_size[PKGNET_MAX_PAIRS]; /* side of pair j's feature map (4 for 4x4, 8 for 8x8) */
    const char *task;         /* "pred" or "recon" */
    const char *teacher;      /* "resnet18", "resnet34", "resnet50", "resnext50_32x4d", "wide_resnet50_2" */
    const char *channel_order;/* "bgr" or "rgb": the order cube channels are in */
    const char *teacher_channel_order; /* "bgr" or "rgb": the order the teacher takes */
    float teacher_mean[3];    /* teacher input = (x/255 - mean) / std, per teacher channel */
    float teacher_std[3];
    /* combined = sum over i of weights[i] * (S_i - mu[i]) / sigma[i], for
     * i = 0 (prediction error) and 1..pairs (inconsistency of pair i). */
    float weights[1 + PKGNET_MAX_PAIRS];
    float mu[1 + PKGNET_MAX_PAIRS];
    float sigma[1 + PKGNET_MAX_PAIRS];
    void *reserved[8];        /* room for later fields without an ABI break; set to NULL */
} pkgnet_model_info;

/*
 * Where scores go. Set the pointers you want and leave the others NULL; each
 * array holds `capacity` cubes' worth of values, and capacity must be at least
 * the number of cubes scored. Values are written cube by cube, so after an
 * error the cubes before the failing one hold their scores.
 */
typedef struct pkgnet_outputs {
    size_t capacity;           /* cubes each non-NULL array has room for */
    float *prediction_error;   /* [n]: S_e, mean squared error over C,H,W */
    float *inconsistency;      /* [n][pairs]: S_c^j, mean over positions of 1 - cosine */
    float *combined;           /* [n]: sum of weighted, normalised components */
    float *prediction;         /* [n][C][32][32]: the predicted frame, scaled like the input (x/255), not clamped */
    float *error_map;          /* [n][32][32]: squared error averaged over channels */
    float *inconsistency_map[PKGNET_MAX_PAIRS]; /* [n][s][s] for pair j, s = pair_size[j] */
    void *reserved[8];         /* room for later outputs without an ABI break; leave NULL */
} pkgnet_outputs;

/* Library version, e.g. "0.1.0". Returns a static string. */
const char *pkgnet_version(void);

/*
 * Which kernels run: CPU features, the BLAS library and core type, OpenMP
 * runtime and default thread count. Loads the BLAS if not loaded yet.
 * Returns a static, NUL-terminated string (never NULL).
 */
const char *pkgnet_system_info(void);

/* Returns a static name for a status, e.g. "PKGNET_ERR_FORMAT";
 * "PKGNET_ERR_UNKNOWN" for a value that is not a pkgnet_status. */
const char *pkgnet_status_name(pkgnet_status status);

/*
 * Returns the message of the last call on this thread that did not return
 * PKGNET_OK, or "" if there was none. Valid until the next pkgnet call on this
 * thread.
 */
const char *pkgnet_last_error(void);

/*
 * Loads a model file (memory-mapped while loading).
 * Returns PKGNET_OK and sets *model, or an error status with *model = NULL.
 */
pkgnet_status pkgnet_model_load(const char *path, pkgnet_model **model);

/*
 * Loads a model from a safetensors image in memory; the bytes are copied as
 * needed, so `data` may be freed once this returns.
 * Returns PKGNET_OK and sets *model, or an error status with *model = NULL.
 */
pkgnet_status pkgnet_model_load_from_memory(const void *data, size_t size, pkgnet_model **model);

/* Releases a model (sessions keep their own reference). NULL is accepted. */
void pkgnet_model_free(pkgnet_model *model);

/* Describes a model. Returns PKGNET_OK, or PKGNET_ERR_INVALID_ARGUMENT for NULL. */
pkgnet_status pkgnet_model_get_info(const pkgnet_model *model, pkgnet_model_info *info);

/*
 * Creates a session on a model with a thread count in 0..1024 (0 = the
 * default: the number of CPUs available to the process). A call shares its
 * threads within each layer; for small models (at most 2e8 multiply-adds per
 * cube, e.g. width-16 students) with at least 4 cubes per thread, the
 * threads instead score the call's micro-batches side by side (up to 16
 * cubes each; how a call is cut into them depends on its cube count alone,
 * so a call of up to 32 cubes keeps two threads busy), and with fewer cubes
 * (on 2 or more threads) the student and the teacher run side by side, each
 * with its own scratch memory (the session's memory grows by one workspace
 * per thread). Either way, scores are the same bits for any thread count.
 * Returns PKGNET_OK and sets *session, or an error status with *session = NULL.
 */
pkgnet_status pkgnet_session_create(const pkgnet_model *model, int threads, pkgnet_session **session);

/* Releases a session. NULL is accepted. */
void pkgnet_session_free(pkgnet_session *session);

/* Changes the session's thread count (0..1024, 0 = default).
 * Returns PKGNET_OK, PKGNET_ERR_INVALID_ARGUMENT, or PKGNET_ERR_BUSY while the session scores. */
pkgnet_status pkgnet_session_set_threads(pkgnet_session *session, int threads);

/*
 * Scores n cubes of 8-bit frames: uint8 [n][5][32][32][C], frames oldest to
 * newest, pixels HWC as cropped from video; scaled by 1/255.
 * `size` is the number of bytes at `cubes` and must be n*5*32*32*C.
 * n = 0 is valid and does nothing (cubes may then be NULL).
 * Returns PKGNET_OK; PKGNET_ERR_INVALID_ARGUMENT for a NULL session, cubes or
 * outputs, a size that is not n*5*32*32*C (or overflows), or
 * outputs->capacity < n; PKGNET_ERR_BUSY if another thread is scoring with
 * this session; PKGNET_ERR_OUT_OF_MEMORY. Outputs of the cubes before a
 * failure are kept.
 */
pkgnet_status pkgnet_score_u8(pkgnet_session *session, const uint8_t *cubes, size_t n, size_t size,
                              pkgnet_outputs *outputs);

/*
 * Scores n cubes in the published float layout: float [n][5*C][32][32] in
 * [0,1], frames stacked frame-major on channels (frame 0's C channels first).
 * `count` is the number of floats at `cubes` and must be n*5*C*32*32.
 * n = 0 is valid and does nothing (cubes may then be NULL).
 * Returns as pkgnet_score_u8; also PKGNET_ERR_INVALID_ARGUMENT, naming the
 * cube, for a NaN or infinite value. Outputs of the cubes before a failure
 * are kept.
 */
pkgnet_status pkgnet_score_f32(pkgnet_session *session, const float *cubes, size_t n, size_t count,
                               pkgnet_outputs *outputs);

/* ------------------------------------------------------------------------
 * From frames to object cubes (docs/video-pipeline.md)
 * ------------------------------------------------------------------------ */

/* 8-bit interleaved pixel formats of a frame. */
typedef enum pkgnet_pixel_format {
    PKGNET_PIXEL_GREY = 1,
    PKGNET_PIXEL_BGR = 2,
    PKGNET_PIXEL_RGB = 3
} pkgnet_pixel_format;

/* A frame the caller owns: `height` rows of `stride` bytes, each holding
 * `width` pixels of `format`. pkgnet only reads it during the call. */
typedef struct pkgnet_frame {
    const uint8_t *data;
    int width;
    int height;
    size_t stride;
    int format;                /* a pkgnet_pixel_format */
} pkgnet_frame;

/* A box in pixels of its frame. Crops take the integer bounds
 * ceil(x1)..ceil(x2)-1 and ceil(y1)..ceil(y2)-1, clipped to the frame. */
typedef struct pkgnet_box {
    float x1, y1, x2, y2;
} pkgnet_box;

/* Why a box gave no cube (pkgnet_make_cubes' `problems`). */
typedef enum pkgnet_box_problem {
    PKGNET_BOX_OK = 0,
    PKGNET_BOX_NON_FINITE = 1, /* a coordinate is NaN or infinite */
    PKGNET_BOX_INVERTED = 2,   /* x2 < x1 or y2 < y1 */
    PKGNET_BOX_EMPTY = 3       /* nothing of it lies inside the frame */
} pkgnet_box_problem;

/*
 * Crops each box from 5 frames (frames[0..4] = t-4..t, same size and format)
 * and resizes the crops to 32x32 with OpenCV's INTER_LINEAR arithmetic
 * (bit-exact with cv2.resize on x86), into uint8 cubes [n][5][32][32][channels]
 * that pkgnet_score_u8 takes. channels 3: grey frames are replicated, colour
 * frames written in `channel_order` ("bgr" or "rgb"; NULL = "bgr");
 * channels 1: colour frames are converted as OpenCV's BGR2GRAY.
 * `size` is the number of bytes at `cubes` and must be n*5*32*32*channels.
 * problems (int32 [n], may be NULL) receives a pkgnet_box_problem per box; a
 * skipped box's cube is zero-filled and does not make the call fail.
 * Returns PKGNET_OK, or PKGNET_ERR_INVALID_ARGUMENT for NULL pointers, frames
 * of different sizes or formats, a bad stride, format, channel count, order
 * or size.
 */
pkgnet_status pkgnet_make_cubes(const pkgnet_frame frames[5], const pkgnet_box *boxes, size_t n,
                                int channels, const char *channel_order,
                                uint8_t *cubes, size_t size, int32_t *problems);

/*
 * Foreground boxes found by motion around frame t (frames[0..2] = t-1, t,
 * t+1): Gaussian blur, summed absolute differences of neighbouring frames
 * (in a wide accumulator: unlike the published code, no uint8 wrap-around),
 * threshold, the detector boxes (grown by 2 px) masked out, external
 * contours' bounding boxes filtered by area and aspect ratio, grown by 2 px.
 * scene: "ped2" (NULL), "avenue" or "shanghaitech" selects the thresholds.
 * Writes min(found, capacity) boxes to `proposals` and the number found to
 * *count (call again with a larger buffer if *count > capacity).
 * Returns PKGNET_OK, or PKGNET_ERR_INVALID_ARGUMENT for NULL pointers, frames
 * of different sizes or formats, or an unknown scene.
 */
pkgnet_status pkgnet_motion_proposals(const pkgnet_frame frames[3],
                                      const pkgnet_box *detector_boxes, size_t n_detector,
                                      const char *scene, pkgnet_box *proposals,
                                      size_t capacity, size_t *count);

/* ------------------------------------------------------------------------
 * Per-camera streams: frames in, object and frame scores out
 * ------------------------------------------------------------------------ */

/* One stream per camera; streams share an immutable model. A stream is used
 * by one thread at a time (a concurrent call returns PKGNET_ERR_BUSY); many
 * streams may be pushed from many threads. Memory is bounded: a ring of 5
 * frames (6 with motion proposals) and the median filter's window. */
typedef struct pkgnet_stream pkgnet_stream;

/* Stream settings; pkgnet_stream_options_init fills "use the model's". */
typedef struct pkgnet_stream_options {
    const char *scene;      /* "ped2", "avenue", "shanghaitech"; NULL = the model's scene */
    int use_motion;         /* nonzero: add motion proposals (frame t is scored when t+1 arrives) */
    int top_k;              /* frame score = mean of the top-k object scores; 0 = the model's */
    int median_window;      /* odd window of the per-clip median filter, 1 = off; 0 = the model's */
    int causal;             /* 1: causal median (no delay); 0: centred, delayed by window/2; -1 = the model's */
    int has_empty_floor;    /* nonzero: empty_floor below overrides the model's */
    float empty_floor;      /* frame score of a frame without objects */
    int threads;            /* scoring threads, 0 = default */
    void *reserved[8];      /* set to NULL (pkgnet_stream_options_init does) */
} pkgnet_stream_options;

/* A detector's box for a frame; filtered by the scene's confidence, area and
 * overlap rules before use. */
typedef struct pkgnet_detection {
    pkgnet_box box;
    float confidence;
} pkgnet_detection;

/* One scored object. */
typedef struct pkgnet_object_score {
    int64_t frame;          /* index of the frame within the clip, from 0 */
    pkgnet_box box;
    float prediction_error;
    float inconsistency[PKGNET_MAX_PAIRS]; /* the model's pairs first, the rest 0 */
    float combined;
} pkgnet_object_score;

/* One frame's score, final once the median filter has seen enough frames. */
typedef struct pkgnet_frame_score {
    int64_t frame;          /* index within the clip */
    float raw;              /* top-k mean of the frame's object scores (or the floor) */
    float smoothed;         /* after the median filter */
} pkgnet_frame_score;

/* Sets every option to "the model's setting". NULL is accepted. */
void pkgnet_stream_options_init(pkgnet_stream_options *options);

/*
 * Creates a stream on a model; options NULL = the model's settings.
 * Returns PKGNET_OK and sets *stream, or PKGNET_ERR_INVALID_ARGUMENT (NULL
 * model or stream, an unknown scene, an even or out-of-range window, a
 * non-finite floor, a bad thread count) with *stream = NULL.
 */
pkgnet_status pkgnet_stream_create(const pkgnet_model *model, const pkgnet_stream_options *options,
                                   pkgnet_stream **stream);

/* Releases a stream. NULL is accepted. */
void pkgnet_stream_free(pkgnet_stream *stream);

/*
 * Pushes the clip's next frame with the detector's boxes for it
 * (detections may be NULL when n is 0). The frame is copied. The step's
 * results (objects scored now, frame scores that became final, boxes
 * skipped) replace the previous step's; read them with the functions below.
 * Returns PKGNET_OK; PKGNET_ERR_INVALID_ARGUMENT for NULL pointers, a bad
 * frame, or a frame whose size or format differs from the clip's (the
 * stream is then unchanged and the next push may retry); PKGNET_ERR_BUSY.
 */
pkgnet_status pkgnet_stream_push(pkgnet_stream *stream, const pkgnet_frame *frame,
                                 const pkgnet_detection *detections, size_t n);

/*
 * Ends the clip: scores the last frame if motion delayed it and releases
 * the median filter's pending frame scores. The next push starts a new clip
 * (frame 0, any size). Returns PKGNET_OK, PKGNET_ERR_INVALID_ARGUMENT for
 * NULL, or PKGNET_ERR_BUSY.
 */
pkgnet_status pkgnet_stream_finish(pkgnet_stream *stream);

/*
 * The last step's results: writes min(available, capacity) entries and sets
 * *count to the number available (call with capacity 0 to size a buffer).
 * Returns PKGNET_OK, or PKGNET_ERR_INVALID_ARGUMENT for NULL stream/count
 * or a NULL buffer with capacity > 0.
 */
pkgnet_status pkgnet_stream_objects(pkgnet_stream *stream, pkgnet_object_score *objects,
                                    size_t capacity, size_t *count);
pkgnet_status pkgnet_stream_frame_scores(pkgnet_stream *stream, pkgnet_frame_score *scores,
                                         size_t capacity, size_t *count);
/* Boxes of the step's frame that gave no cube, with a pkgnet_box_problem each
 * (problems may be NULL). */
pkgnet_status pkgnet_stream_skipped(pkgnet_stream *stream, pkgnet_box *boxes, int32_t *problems,
                                    size_t capacity, size_t *count);

/* ------------------------------------------------------------------------
 * Training (docs/training.md)
 *
 * A trainer fits a new student to object cubes of normal footage (built with
 * pkgnet_make_cubes from frames and boxes) against a frozen teacher from a
 * teacher file (python -m pkgnet.convert teacher), epoch by epoch, then writes
 * a model file whose score statistics are calibrated on the same cubes.
 *
 *     pkgnet_train_options options;
 *     pkgnet_train_options_init(&options);
 *     options.pairs = "d8:layer3,d16:layer2";
 *     options.epochs = 8;
 *     pkgnet_trainer *trainer = NULL;
 *     if (pkgnet_trainer_create("resnet20.teacher.safetensors", cubes, n, 3, &options, &trainer) != PKGNET_OK) ...
 *     for (int e = 0; e < options.epochs; e++) {
 *         pkgnet_epoch_report report;
 *         pkgnet_trainer_run_epoch(trainer, NULL, NULL, &report);
 *         pkgnet_trainer_save_checkpoint(trainer, "model.ckpt");
 *     }
 *     pkgnet_trainer_write_model(trainer, "model.safetensors", 1);
 *     pkgnet_trainer_free(trainer);
 *
 * Threads: one thread at a time per trainer (a concurrent call returns
 * PKGNET_ERR_BUSY); separate trainers are independent. The same seed and
 * thread count give the same model.
 * ------------------------------------------------------------------------ */

typedef struct pkgnet_trainer pkgnet_trainer;

/* Training settings; pkgnet_train_options_init fills the published defaults. */
typedef struct pkgnet_train_options {
    int k;                        /* student downsampling: 2 (maxpool) or 1 (strided conv); 2 */
    int width;                    /* student base width w; 16 */
    const char *pairs;            /* "student:teacher,..." e.g. "d8:layer3,d16:layer2"; NULL = the
                                     published pairs of a torchvision ResNet teacher */
    int epochs;                   /* 120 */
    int batch_size;               /* cubes per Adam step; 128 */
    double learning_rate;         /* Adam; 1e-4 */
    int milestone_epoch;          /* the rate is multiplied by learning_rate_decay after this many epochs; 60 */
    double learning_rate_decay;   /* 0.8 */
    float loss_weights[3];        /* lambda_e (MSE), lambda_g (gradient loss), lambda_c (distillation); 0.8, 0.1, 0.2 */
    double gradient_power;        /* exponent of the gradient loss; 3 */
    int gradient_loss_paper;      /* 0: |dx(t) - dx(p)| as published; 1: ||dx(t)| - |dx(p)|| (paper eq. 2) */
    int batch_statistics;         /* 0: BatchNorm with fixed (0, 1) statistics as published; 1: batch statistics */
    uint64_t seed;                /* initial weights and shuffles; 0 */
    int threads;                  /* 0 = default */
    int top_k;                    /* frame scoring written into the model; 3 */
    int median_window;            /* 19 */
    const char *scene;            /* "ped2", "avenue" or "shanghaitech"; NULL = "ped2" */
    const float *score_weights;   /* [1 + pairs] weights of eq. 8, NULL = 0.01, 0.65, 0.35 for two pairs, else 1 */
    size_t score_weight_count;
    int input_channel_order;      /* channel order of the cubes: 0 = BGR, 1 = RGB */
    size_t teacher_cache_bytes;   /* teacher features of all cubes are kept when they fit; 2 GiB */
    void *reserved[8];            /* set to NULL (pkgnet_train_options_init does) */
} pkgnet_train_options;

/* One finished epoch: means over its steps. */
typedef struct pkgnet_epoch_report {
    int epoch;                    /* 1-based */
    double loss;                  /* the weighted total */
    double prediction_loss;       /* MSE */
    double gradient_loss;
    double distillation_loss;     /* mean over pairs of the mean 1 - cos */
    double learning_rate;
    double seconds;
    double reserved[4];
} pkgnet_epoch_report;

/* Called after every step (and while teacher features are computed, with
 * epoch 0): steps done of the epoch's total, the epoch's mean loss so far
 * (NaN before the first step). Runs on the calling thread. */
typedef void (*pkgnet_train_progress)(void *user, int epoch, int done, int total, double loss);

/* Fills the defaults above. NULL is accepted. */
void pkgnet_train_options_init(pkgnet_train_options *options);

/*
 * Creates a trainer on n cubes, uint8 [n][5][32][32][channels] (HWC frames
 * oldest first, channels 1 or 3), copied. options NULL = the defaults.
 * Returns PKGNET_OK and sets *trainer; PKGNET_ERR_INVALID_ARGUMENT (NULL
 * pointers, n = 0, bad options or pairs), PKGNET_ERR_IO / _FORMAT /
 * _UNSUPPORTED for the teacher file, PKGNET_ERR_MODEL_MISMATCH for pairs
 * the teacher cannot serve (unknown block, different map size).
 */
pkgnet_status pkgnet_trainer_create(const char *teacher_path, const uint8_t *cubes, size_t n, int channels,
                                    const pkgnet_train_options *options, pkgnet_trainer **trainer);

/* Releases a trainer. NULL is accepted. */
void pkgnet_trainer_free(pkgnet_trainer *trainer);

/*
 * Runs the next epoch (progress may be NULL; report may be NULL). A NaN or
 * exploding loss returns PKGNET_ERR_INTERNAL with a message; the trainer is
 * then unusable, and checkpoints written before stay valid.
 */
pkgnet_status pkgnet_trainer_run_epoch(pkgnet_trainer *trainer, pkgnet_train_progress progress, void *user,
                                       pkgnet_epoch_report *report);

/* Epochs completed so far (after a resume: the checkpoint's); -1 for NULL. */
int pkgnet_trainer_epochs_done(const pkgnet_trainer *trainer);

/* Writes the student, Adam's moments and the position in the run to path
 * (atomically: the previous file stays until the new one is whole). */
pkgnet_status pkgnet_trainer_save_checkpoint(pkgnet_trainer *trainer, const char *path);

/* Continues from a checkpoint written by a trainer with the same settings
 * and cubes; PKGNET_ERR_INVALID_ARGUMENT names what differs. */
pkgnet_status pkgnet_trainer_resume(pkgnet_trainer *trainer, const char *path);

/* Writes the model file: calibrate nonzero computes mu and sigma of every
 * score component over the training cubes (eq. 8); 0 writes mu 0, sigma 1. */
pkgnet_status pkgnet_trainer_write_model(pkgnet_trainer *trainer, const char *path, int calibrate);

/* ------------------------------------------------------------------------
 * Built-in object detector: darknet YOLO models (docs/video-pipeline.md)
 * ------------------------------------------------------------------------ */

/*
 * A darknet-format YOLO network (a .cfg and its .weights, e.g. Yolo-Fastest
 * 1.1) run by pkgnet's own kernels, plus the scratch memory of one forward
 * pass. Layers: [convolutional] (groups, batch_normalize), [maxpool],
 * [route] (groups, group_id), [shortcut], [upsample], [dropout], [yolo];
 * activations linear, relu, leaky, relu6, logistic. Frames are resized to
 * the network input as cv2.dnn.blobFromImage(frame, 1/255, size,
 * swapRB=True, crop=False) does (a plain INTER_LINEAR resize, no letterbox),
 * and decoded as OpenCV's darknet importer does.
 *
 * Threads: a detector is used by one thread at a time (a concurrent call
 * returns PKGNET_ERR_BUSY); load one per thread. A stream given a detector
 * (pkgnet_stream_set_detector) shares its network but not its scratch, so
 * the detector stays free for other calls, and any number of streams may
 * share one.
 */
typedef struct pkgnet_detector pkgnet_detector;

/* What a loaded detector is. */
typedef struct pkgnet_detector_info {
    int input_width;          /* network input ([net] width and height) */
    int input_height;
    int classes;              /* classes of the [yolo] heads (coco.names order for COCO models) */
    int heads;                /* [yolo] layers */
    int layers;               /* layer sections of the cfg */
    size_t parameters;        /* floats read from the .weights file */
    void *reserved[8];        /* room for later fields without an ABI break; set to NULL */
} pkgnet_detector_info;

/* What a detection keeps; pkgnet_detector_options_init fills the defaults. */
typedef struct pkgnet_detector_options {
    float confidence;         /* keep objects whose objectness * class probability > this; default 0.25 */
    float nms_threshold;      /* drop a box whose IoU with a more confident box of its class exceeds this;
                                 default 0.45, 1 = no suppression */
    const int32_t *classes;   /* class indices that may be reported (NULL: all); each cell and anchor
                                 reports its most confident class among these; copied by the calls */
    size_t n_classes;         /* entries at `classes` (0 when it is NULL) */
    int threads;              /* threads of the forward pass, 0..1024, 0 = default */
    void *reserved[8];        /* set to NULL (pkgnet_detector_options_init does) */
} pkgnet_detector_options;

/* One detected object. */
typedef struct pkgnet_detected_object {
    pkgnet_box box;           /* pixels of the frame, clipped to it */
    float confidence;         /* objectness * class probability */
    int32_t class_id;         /* index into the model's class list */
} pkgnet_detected_object;

/* Fills the defaults (confidence 0.25, NMS 0.45, all classes, default threads). NULL is accepted. */
void pkgnet_detector_options_init(pkgnet_detector_options *options);

/*
 * Loads a detector from a darknet .cfg and its .weights file. Every
 * problem is reported, never a crash: PKGNET_ERR_IO (a file cannot be
 * read), PKGNET_ERR_FORMAT (a malformed cfg line, an out-of-range or
 * missing value, a bad layer index, a bad weights header, non-finite
 * weights; the message names the file, line and layer),
 * PKGNET_ERR_UNSUPPORTED (a layer type, activation or option pkgnet does
 * not run), PKGNET_ERR_MODEL_MISMATCH (the .weights size does not fit the
 * cfg: truncated, or another model's; the message names the layer),
 * PKGNET_ERR_OUT_OF_MEMORY, PKGNET_ERR_BACKEND, PKGNET_ERR_INVALID_ARGUMENT
 * (NULL pointers). Sets *detector, or NULL on error.
 */
pkgnet_status pkgnet_detector_load(const char *cfg_path, const char *weights_path, pkgnet_detector **detector);

/* Releases a detector (streams keep its network alive). NULL is accepted. */
void pkgnet_detector_free(pkgnet_detector *detector);

/* Describes a detector. Returns PKGNET_OK, or PKGNET_ERR_INVALID_ARGUMENT for NULL. */
pkgnet_status pkgnet_detector_get_info(const pkgnet_detector *detector, pkgnet_detector_info *info);

/*
 * Detects the objects of a frame (any size; grey frames are read as their
 * BGR conversion). Candidates are decoded from every head, kept when their
 * confidence exceeds options->confidence, suppressed per class (greedy NMS
 * on the unclipped boxes, IoU of boxes with area w*h) and clipped to the
 * frame. Writes min(found, capacity) objects, highest confidence first, and
 * sets *count to the number found (objects may be NULL when capacity is 0).
 * options NULL = the defaults.
 * Returns PKGNET_OK; PKGNET_ERR_INVALID_ARGUMENT for NULL pointers, a bad
 * frame or bad options (out-of-range thresholds or class indices, an empty
 * class list); PKGNET_ERR_BUSY; PKGNET_ERR_OUT_OF_MEMORY.
 */
pkgnet_status pkgnet_detector_detect(pkgnet_detector *detector, const pkgnet_frame *frame,
                                     const pkgnet_detector_options *options,
                                     pkgnet_detected_object *objects, size_t capacity, size_t *count);

/*
 * For checking a model against another darknet runtime: runs the network on
 * a frame and writes the raw input of its head-th [yolo] layer (0 = the
 * first in the cfg), float [channels][height][width] before any logistic,
 * channel a*(5+classes)+k holding anchor a's tx, ty, tw, th, objectness,
 * class 0, ... Sets shape[0..2] to channels, height, width and *count to
 * their product; writes min(count, capacity) floats (outputs may be NULL
 * when capacity is 0). threads: 0..1024, 0 = default.
 * Returns PKGNET_OK; PKGNET_ERR_INVALID_ARGUMENT (NULL pointers, a bad
 * frame, head or thread count); PKGNET_ERR_BUSY; PKGNET_ERR_OUT_OF_MEMORY.
 */
pkgnet_status pkgnet_detector_raw_output(pkgnet_detector *detector, const pkgnet_frame *frame, int head,
                                         int threads, float *outputs, size_t capacity, size_t *count,
                                         int shape[3]);

/*
 * Gives a stream a detector: from its next push on, every frame is run
 * through it and the objects found join the detections passed to
 * pkgnet_stream_push, before the scene's filter (confidence, area,
 * overlap) and the motion proposals. detector NULL removes it. The stream
 * keeps the detector's network alive and runs it in its own scratch memory;
 * options NULL = the defaults (the class list is copied).
 * Returns PKGNET_OK; PKGNET_ERR_INVALID_ARGUMENT (NULL stream, bad
 * options); PKGNET_ERR_BUSY while the stream is pushed;
 * PKGNET_ERR_OUT_OF_MEMORY.
 */
pkgnet_status pkgnet_stream_set_detector(pkgnet_stream *stream, const pkgnet_detector *detector,
                                         const pkgnet_detector_options *options);

#ifdef __cplusplus
}
#endif

#endif /* PKGNET_H */
