// The C API of opencv_shim.h over OpenCV's C++ one. Every entry point
// catches everything: an exception must never unwind into C frames.
#include "opencv_shim.h"

#include <cstdio>
#include <exception>
#include <new>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace {

bool fail(char *msg, size_t msg_size, const char *what)
{
    if (msg && msg_size)
        std::snprintf(msg, msg_size, "%s", what);
    return false;
}

bool fail_exception(char *msg, size_t msg_size)
{
    try {
        throw;
    } catch (const cv::Exception &e) {
        // e.what() carries OpenCV's file and line; err is the reason alone.
        return fail(msg, msg_size, e.err.c_str());
    } catch (const std::bad_alloc &) {
        return fail(msg, msg_size, "out of memory");
    } catch (const std::exception &e) {
        return fail(msg, msg_size, e.what());
    } catch (...) {
        return fail(msg, msg_size, "an unknown C++ exception");
    }
}

} // namespace

extern "C" bool kd_cv_decode(const unsigned char *bytes, size_t len, kd_cv_pixels *out,
                             char *msg, size_t msg_size)
{
    *out = kd_cv_pixels{0, 0, 0, 0, nullptr, nullptr};
    try {
        if (len == 0 || len > static_cast<size_t>(INT32_MAX))
            return fail(msg, msg_size, "the file is empty or over 2 GiB");
        const cv::Mat encoded(1, static_cast<int>(len), CV_8UC1,
                              const_cast<unsigned char *>(bytes));
        cv::Mat *image = new cv::Mat(cv::imdecode(encoded, cv::IMREAD_UNCHANGED));
        int depth = image->depth(), channels = image->channels();
        if (image->empty() || !image->isContinuous() ||
            (depth != CV_8U && depth != CV_16U) ||
            (channels != 1 && channels != 3 && channels != 4)) {
            bool empty = image->empty();
            delete image;
            return fail(msg, msg_size,
                        empty ? "OpenCV cannot decode it (corrupt, truncated or not an image)"
                              : "OpenCV decoded it to an unsupported depth or channel count");
        }
        *out = kd_cv_pixels{image->rows, image->cols, channels, depth == CV_8U ? 8 : 16,
                            image->data, image};
        return true;
    } catch (...) {
        return fail_exception(msg, msg_size);
    }
}

extern "C" void kd_cv_pixels_free(kd_cv_pixels *p)
{
    delete static_cast<cv::Mat *>(p->handle);
    *p = kd_cv_pixels{0, 0, 0, 0, nullptr, nullptr};
}

extern "C" bool kd_cv_resize(const uint8_t *src, int h, int w, int c, size_t src_stride,
                             uint8_t *dst, int out_h, int out_w, kd_cv_interp interp,
                             char *msg, size_t msg_size)
{
    try {
        static const int flags[] = {cv::INTER_NEAREST, cv::INTER_LINEAR, cv::INTER_CUBIC,
                                    cv::INTER_AREA};
        if (c < 1 || c > 4 || h < 1 || w < 1 || out_h < 1 || out_w < 1 ||
            static_cast<unsigned>(interp) > KD_CV_AREA)
            return fail(msg, msg_size, "resize: bad sizes or interpolation");
        const cv::Mat in(h, w, CV_8UC(c), const_cast<uint8_t *>(src), src_stride);
        cv::Mat out(out_h, out_w, CV_8UC(c), dst);
        cv::resize(in, out, out.size(), 0, 0, flags[interp]);
        if (out.data != dst) // cv::resize reallocates only on a size or type mismatch
            return fail(msg, msg_size, "resize: OpenCV did not write into the buffer");
        return true;
    } catch (...) {
        return fail_exception(msg, msg_size);
    }
}

extern "C" bool kd_cv_use_calling_thread_only(char *msg, size_t msg_size)
{
    try {
        cv::setNumThreads(0);
        return true;
    } catch (...) {
        return fail_exception(msg, msg_size);
    }
}
