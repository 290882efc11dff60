/* `kdengine plan --nodes N --gpus-per-node G` (plan_scaling.h). */
#include <string.h>
#include <time.h>

#include <kdengine/kdengine.h>

#include "plan_scaling.h"

static const kd_link_info links[] = {
    [KD_LINK_NVLINK] = {"nvlink", "NVLink 4", 450e9,
                        "NVIDIA H100 datasheet: 900 GB/s per GPU, both directions"},
    [KD_LINK_PCIE] = {"pcie", "PCIe 4.0 x16", 25e9,
                      "PCI-SIG: 16 GT/s x 16 lanes = 31.5 GB/s per direction, about 25 "
                      "effective"},
    [KD_LINK_IB] = {"ib", "InfiniBand HDR", 25e9,
                    "IBTA HDR: 200 Gb/s per port, one adapter per node"},
};

const kd_link_info *kd_link_of(kd_link link) { return &links[link]; }

bool kd_link_parse(const char *flag, kd_link *out)
{
    for (size_t i = 0; i < sizeof links / sizeof *links; i++)
        if (!strcmp(flag, links[i].flag)) {
            *out = (kd_link)i;
            return true;
        }
    return false;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One forward of m on zeros at `batch` (with grad: training mode, then a
 * backward from the sum of the logits): its seconds, the backward's, and
 * the multiply-adds per image of the forward. */
static kd_status time_pass(kd_model_run *m, const kd_data_run *d, int64_t batch, bool grad,
                           double *forward_s, double *backward_s, int64_t *macs)
{
    int64_t shape[4] = {batch, d->channels, d->height, d->width};
    bool saved = kd_set_grad_enabled(grad);
    kd_scope_begin();
    kd_tensor *x = kd_tensor_zeros(m->dtype, KD_CPU, 4, shape);
    memset(m->out, 0, (size_t)m->n_taps * sizeof *m->out);
    kd_forward_args args = {sizeof args, x, grad, kd_rng_make(0, 0, 0), m->want, m->out};
    kd_macs_take();
    double t0 = now_s();
    kd_status st = x ? m->vt->forward(m->self, &args)
                     : kd_error_wrap(kd_last_status(), "the input of %lld images",
                                     (long long)batch);
    double t1 = now_s();
    *macs = kd_macs_take() / batch;
    if (st == KD_OK && grad) {
        st = kd_backward(kd_sum_all(m->out[m->logits]));
        for (int i = 0; i < m->n_tensors; i++)
            kd_tensor_zero_grad(m->tensors[i].tensor);
    }
    *forward_s = t1 - t0;
    *backward_s = grad ? now_s() - t1 : 0;
    kd_scope_end();
    kd_set_grad_enabled(saved);
    return st == KD_OK ? st : kd_error_wrap(st, "%s at batch %lld", m->spec->path,
                                            (long long)batch);
}

/* The compute of one step of one process at `batch`: its seconds and the
 * backward's share of them, and how they were found. */
static kd_status step_compute(kd_session *s, const kd_scaling_options *o, int64_t batch,
                              double *seconds, double *backward, char *how, size_t size)
{
    const kd_data_run *d = &s->train;
    double f = 0, b = 0, tf = 0, unused;
    int64_t macs = 0, teacher_macs = 0;
    /* a first pass at this batch warms the caches and the allocator */
    kd_status st = time_pass(&s->student, d, batch, true, &f, &b, &macs);
    if (st == KD_OK)
        st = time_pass(&s->student, d, batch, true, &f, &b, &macs);
    if (st == KD_OK && s->teacher.vt)
        st = time_pass(&s->teacher, d, batch, false, &tf, &unused, &teacher_macs);
    if (st != KD_OK)
        return st;
    if (o->tflops > 0) {
        /* backward about twice the forward */
        double flops = (double)batch * (3.0 * 2.0 * (double)macs + 2.0 * (double)teacher_macs);
        *seconds = flops / (o->tflops * 1e12);
        *backward = (double)batch * 2.0 * 2.0 * (double)macs / (o->tflops * 1e12);
        snprintf(how, size, "estimated: %.3g GFLOP (student 3 x 2 x %lld multiply-adds per "
                 "image, teacher 2 x %lld) at %g TFLOP/s", flops / 1e9, (long long)macs,
                 (long long)teacher_macs, o->tflops);
    } else {
        *seconds = f + b + tf;
        *backward = b;
        char teacher[64] = "";
        if (s->teacher.vt)
            snprintf(teacher, sizeof teacher, " + teacher forward %.3g ms", 1e3 * tf);
        snprintf(how, size, "measured here: student forward %.3g ms + backward %.3g ms%s, %d "
                 "threads; for a GPU give --tflops", 1e3 * f, 1e3 * b, teacher,
                 kd_num_threads());
    }
    return KD_OK;
}

kd_status kd_plan_scaling(kd_session *s, const kd_scaling_options *o, FILE *out)
{
    const kd_job *job = s->job;
    if (!s->train.vt)
        return kd_error(KD_ERR_INVALID, "plan --nodes: the job has no data.train to scale");
    int64_t n = o->nodes, g = o->gpus_per_node, p = n * g;
    int64_t global = job->train.batch_size, batch = (global + p - 1) / p;
    if (global < p)
        return kd_error(KD_ERR_INVALID, "plan --nodes %lld --gpus-per-node %lld: %lld "
                        "processes, but data.train.batch_size %lld gives each at most one "
                        "sample and some none", (long long)n, (long long)g, (long long)p,
                        (long long)global);
    int64_t values = 0, bytes = 0, loss_values = 0;
    for (int i = 0; i < s->n_params; i++) {
        int64_t k = kd_tensor_numel(s->params[i].tensor);
        values += k;
        bytes += k * (int64_t)kd_dtype_size(s->params[i].tensor->dtype);
    }
    for (int l = 0; l < s->n_losses; l++)
        for (int i = 0; i < s->losses[l].n_tensors; i++)
            if (s->losses[l].tensors[i].flags & KD_TENSOR_PARAM)
                loss_values += kd_tensor_numel(s->losses[l].tensors[i].tensor);
    const kd_link_info *intra = kd_link_of(o->intra_node), *inter = kd_link_of(KD_LINK_IB);
    double b = (double)bytes;
    double ring = 2.0 * (double)(p - 1) / (double)p * b;
    double intra_bytes = 2.0 * (double)(g - 1) / (double)g * b;
    /* through the node's adapter, every GPU of the node shares it */
    double intra_s = intra_bytes * (o->intra_node == KD_LINK_IB ? (double)g : 1.0) /
                     intra->bytes_per_second;
    double inter_bytes = 2.0 * (double)(n - 1) / (double)n * b;
    double inter_s = inter_bytes / inter->bytes_per_second;
    double comm = intra_s + inter_s;
    double compute, backward;
    char how[512];
    kd_status st = step_compute(s, o, batch, &compute, &backward, how, sizeof how);
    if (st != KD_OK)
        return kd_error_wrap(st, "plan: timing a step");
    double exposed = comm > backward ? comm - backward : 0;
    fprintf(out, "scaling: %lld nodes x %lld GPUs = %lld processes, batch %lld per process "
            "(of %lld)\n", (long long)n, (long long)g, (long long)p, (long long)batch,
            (long long)global);
    fprintf(out, "  links: within a node %s, %.0f GB/s per %s (%s); between nodes %s, "
            "%.0f GB/s per node (%s)\n", intra->name, intra->bytes_per_second / 1e9,
            o->intra_node == KD_LINK_IB ? "node" : "GPU", intra->source, inter->name,
            inter->bytes_per_second / 1e9, inter->source);
    fprintf(out, "  gradients per step: %lld values (%lld of them the losses'), %lld bytes\n",
            (long long)values, (long long)loss_values, (long long)bytes);
    fprintf(out, "  ring all-reduce volume per process: 2(P-1)/P x %lld = %.0f bytes\n",
            (long long)bytes, ring);
    fprintf(out, "  all-reduce time: within nodes %.0f bytes per GPU in %.6g ms, between nodes "
            "%.0f bytes per node in %.6g ms; %.6g ms per step\n", intra_bytes, 1e3 * intra_s,
            inter_bytes, 1e3 * inter_s, 1e3 * comm);
    fprintf(out, "  compute per step per process: %.6g ms (%s)\n", 1e3 * compute, how);
    fprintf(out, "  scaling efficiency: %.1f%% with no overlap (all-reduce after the backward, "
            "kdengine's CPU path); %.1f%% with the all-reduce overlapping the backward "
            "(%.6g ms)\n", 100.0 * compute / (compute + comm),
            100.0 * compute / (compute + exposed), 1e3 * backward);
    return KD_OK;
}
