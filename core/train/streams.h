/* The stream words a training step keys its random generators with:
 * kd_rng_make(seed, WORD, step) for the student, the teacher (the first
 * model teacher; teachers[i] after it: WORD << 8 | i), each loss (WORD << 8
 * | i) and each batch
 * transform (WORD << 8 | i). `kdengine label` keys
 * the teacher and the batch transforms the same way, so a stored view is
 * the one training makes. */
#ifndef KD_CORE_TRAIN_STREAMS_H
#define KD_CORE_TRAIN_STREAMS_H

#define KD_STREAM_STUDENT 0x53545544ull /* "STUD" */
#define KD_STREAM_TEACHER 0x54454143ull /* "TEAC" */
#define KD_STREAM_LOSS 0x4C4F5353ull    /* "LOSS" */
#define KD_STREAM_BATCH 0x42415443ull   /* "BATC" */

#endif
