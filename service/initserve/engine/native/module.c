/* The CPython extension initserve.engine._native: thin bindings over the C kernels in this folder.
 *
 * Every function takes the caller's writable buffer (buffer protocol), checks its arguments with
 * the GIL held, then releases the GIL for the whole computation: threads of a pool run truly in
 * parallel. Adding a kernel: put it in its own .c file here (setup.py compiles every .c file in
 * this folder into this one extension) and add its binding to METHODS below. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "algorithm1.h"
#include "householder.h"

/* fill(out, program, layout, start): result elements start .. start+len(out)/itemsize-1.
 * program = (kind, dtype, k0, k1, stream, value, low, width, mean, std, lo, hi, alpha, beta,
 *            p_low, p_width, mirrored, truncated); layout = (base, run_length, extents, strides). */
static PyObject *native_fill(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer out;
    PyObject *program_args, *layout_args;
    unsigned long long start;
    unsigned long long k0, k1, stream, base, run_length;
    is_program program;
    is_layout layout;
    PyObject *extents, *strides;
    if (!PyArg_ParseTuple(args, "w*O!O!K", &out, &PyTuple_Type, &program_args, &PyTuple_Type, &layout_args, &start))
        return NULL;
    memset(&program, 0, sizeof program);
    memset(&layout, 0, sizeof layout);
    if (!PyArg_ParseTuple(program_args, "iiKKKdddddddddddpp;program", &program.kind, &program.dtype,
                          &k0, &k1, &stream, &program.value, &program.low, &program.width,
                          &program.mean, &program.std, &program.lo, &program.hi, &program.alpha, &program.beta,
                          &program.p_low, &program.p_width, &program.mirrored, &program.truncated))
        goto fail;
    program.k0 = k0;
    program.k1 = k1;
    program.stream = stream;
    if (program.kind < IS_CONSTANT || program.kind > IS_WORDS || program.dtype < IS_F64 || program.dtype > IS_U64 ||
        ((program.kind == IS_WORDS) != (program.dtype == IS_U64))) {
        PyErr_SetString(PyExc_ValueError, "program: unknown kind/dtype, or words without the u64 dtype");
        goto fail;
    }
    if (!PyArg_ParseTuple(layout_args, "KKO!O!;layout", &base, &run_length, &PyTuple_Type, &extents, &PyTuple_Type, &strides))
        goto fail;
    layout.base = base;
    layout.run_length = run_length;
    layout.rank = (int)PyTuple_GET_SIZE(extents);
    if (layout.rank > IS_MAX_RANK || PyTuple_GET_SIZE(strides) != layout.rank ||
        (layout.rank > 0 && layout.run_length == 0)) {
        PyErr_SetString(PyExc_ValueError, "layout: at most 8 outer dimensions, one stride each, runs of >= 1 element");
        goto fail;
    }
    for (int d = 0; d < layout.rank; d++) {
        layout.extents[d] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(extents, d));
        layout.strides[d] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(strides, d));
        if (PyErr_Occurred())
            goto fail;
        if (layout.extents[d] == 0) {
            PyErr_SetString(PyExc_ValueError, "layout: extents must be >= 1");
            goto fail;
        }
    }
    const size_t itemsize = is_itemsize(program.dtype);
    if (out.len % (Py_ssize_t)itemsize != 0) {
        PyErr_Format(PyExc_ValueError, "out: %zd bytes is not a whole number of %zu-byte items", out.len, itemsize);
        goto fail;
    }
    const size_t count = (size_t)out.len / itemsize;
    Py_BEGIN_ALLOW_THREADS
    is_fill_result(&program, &layout, (uint64_t)start, count, out.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&out);
    return NULL;
}

/* qr_haar(a, m, n, rdiag, threads): orthogonal algorithm 2's whole QR with the sign fix (householder.h);
 * a (m x n float64) is replaced by Q·diag(s), rdiag (n) receives R's diagonal. */
static PyObject *native_qr_haar(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer a, rdiag;
    Py_ssize_t m, n;
    int threads, status = 0;
    if (!PyArg_ParseTuple(args, "w*nnw*i", &a, &m, &n, &rdiag, &threads))
        return NULL;
    PyObject *result = NULL;
    if (n < 1 || m < n || a.len < m * n * (Py_ssize_t)sizeof(double) ||
        rdiag.len < n * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "qr_haar: buffer sizes do not match m >= n >= 1");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    status = is_qr_haar((double *)a.buf, (size_t)m, (size_t)n, (double *)rdiag.buf, threads);
    Py_END_ALLOW_THREADS
    if (status != 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&a);
    PyBuffer_Release(&rdiag);
    return result;
}

/* build_info(): how this extension was compiled, for diagnostics and the -march test. */
static PyObject *native_build_info(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    int fma = 0, avx2 = 0, avx512f = 0;
#if defined(__FMA__)
    fma = 1;
#endif
#if defined(__AVX2__)
    avx2 = 1;
#endif
#if defined(__AVX512F__)
    avx512f = 1;
#endif
#if defined(__VERSION__)
    const char *compiler = __VERSION__;
#elif defined(_MSC_FULL_VER)
    const char *compiler = "msvc " Py_STRINGIFY(_MSC_FULL_VER);
#else
    const char *compiler = "unknown";
#endif
    return Py_BuildValue("{s:s,s:N,s:N,s:N}", "compiler", compiler, "fma_available", PyBool_FromLong(fma), "avx2",
                         PyBool_FromLong(avx2), "avx512f", PyBool_FromLong(avx512f));
}

static PyMethodDef METHODS[] = {
    {"fill", native_fill, METH_VARARGS,
     "fill(out, program, layout, start): algorithm 1 into the writable buffer out, GIL released."},
    {"qr_haar", native_qr_haar, METH_VARARGS,
     "qr_haar(a, m, n, rdiag, threads): orthogonal algorithm 2's QR and sign fix, Q in place of a, GIL released."},
    {"build_info", native_build_info, METH_NOARGS, "build_info() -> dict: compiler and instruction-set macros."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "initserve.engine._native", "initserve's compiled kernels (algorithm 1; orthogonal's QR of algorithm 2).", -1, METHODS,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&MODULE); }
