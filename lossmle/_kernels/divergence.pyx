"""Kernels for the KL divergence and the (relative) entropy.

Design
------
Layout as in ``special.pyx``: inputs are ``(n_outer, n, n_inner)`` views
reduced over the middle axis, outputs ``(n_outer, n_inner)``.  The elementwise
terms follow scipy.special exactly (``entr`` and ``rel_entr``), including
their conventions at 0, for negative arguments and for nan, so that results
agree with ``rel_entr(p, q).sum(axis)`` and ``scipy.stats.entropy``.  Sums are
in double.  A term is ``p log(p / q)``, one log of the quotient (no
cancellation between ``log p`` and ``log q`` when they are close); only when
``p / q`` overflows or goes subnormal are the logs taken apart.

The KL loop also counts entries that are negative or nan when asked to
(``validate``), in the same pass; the Python layer raises on a non-zero count,
so a bad probability never turns into a silent number.  Contiguous rows take
the vectorised ``lm_kl`` (p log(p/q) with a vectorised log); a row with any
entry outside its fast domain (p or q negative, nan, inf, p > 0 with q = 0,
p/q not a normal number) is redone by the scalar loop, which defines those.
Many short rows back to back (``n <= KL_SHORT_MAX``) go through
``lm_kl_rows`` a block at a time instead: one flat vectorised pass over the
block's terms, then a sum per row.

``kl_div_flat`` is torch's ``kl_div`` (input in log space): its pointwise
terms over a 2-D view walked in C order, in blocks of ``SHORT_BLOCK`` terms,
each block's terms summed by ``pairwise_sum`` and the block totals by
``pairwise_sum`` again: ``rows.blocked_sum`` of all the terms, the bits of
``_reduce.total`` on them whatever the thread count (threads take whole
blocks).

The row helpers (``rel_entr``, ``entr``, ``kl_row``, ``entropy_row``) live in
``divergence_rows.pxd``, one definition shared with ``fastpath.pyx`` (which must
give these kernels' bits for small inputs).
"""
from cython.parallel cimport prange
from cython cimport floating
from libc.math cimport exp, log
from libc.stdlib cimport malloc, free

from lossmle._kernels.rowops cimport simd_init, lm_simd_ready, SHORT_BLOCK
from lossmle._kernels.rows cimport tile_units, middle_axis_c, c_rows
from lossmle._kernels.divergence_rows cimport (
    kl_row, entropy_row, KL_SHORT_MAX, kl_short_block, kl_short_blocks, ENTR_SHORT_MAX,
    entropy_short_block, entropy_short_blocks, divergence_strided_rows, DIV_KL, DIV_ENTR,
    DIV_REL_ENTR,
)
from lossmle._kernels.loss_rows cimport pairwise_sum


def _simd_init():
    """(Re)select this module's SIMD variant (reads LOSSMLE_SIMD); returns its name."""
    global SIMD_PATH
    SIMD_PATH = simd_init()
    return SIMD_PATH


SIMD_PATH = _simd_init()


cdef inline bint _kl_short_layout(const floating[:, :, :] p, const floating[:, :, :] q,
                                  floating[:, :] out) noexcept nogil:
    cdef Py_ssize_t n = p.shape[1], item = sizeof(floating)
    return (n <= KL_SHORT_MAX and p.shape[2] == 1 and lm_simd_ready()
            and p.strides[1] == item and q.strides[1] == item
            and p.strides[0] == n * item and q.strides[0] == n * item
            and out.strides[0] == item)


cdef Py_ssize_t _kl_short_rows(const floating[:, :, :] p, const floating[:, :, :] q,
                               floating[:, :] out, bint validate, int n_threads):
    cdef Py_ssize_t n = p.shape[1], n_rows = p.shape[0]
    cdef Py_ssize_t n_blocks = (n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK
    cdef Py_ssize_t blk, start, bad_rows = 0
    if n_threads == 1:  # one thread's work: no OpenMP region to start
        with nogil:
            bad_rows = kl_short_blocks(&p[0, 0, 0], &q[0, 0, 0], n_rows, n, validate,
                                       &out[0, 0])
    else:
        for blk in prange(n_blocks, schedule='static', num_threads=n_threads, nogil=True):
            start = blk * SHORT_BLOCK
            bad_rows += kl_short_block(&p[start, 0, 0], &q[start, 0, 0],
                                       min(<Py_ssize_t>SHORT_BLOCK, n_rows - start), n,
                                       validate, &out[start, 0])
    return bad_rows


cdef inline bint _middle_c(const floating[:, :, :] x) noexcept nogil:
    """x is (n_outer, n, n_inner > 1) C-ordered (a middle axis of a C-ordered array)."""
    return middle_axis_c(x.shape, x.strides, sizeof(floating))


cdef inline bint _out_c(const floating[:, :] out) noexcept nogil:
    """out is (n_outer, n_inner) C-ordered."""
    return c_rows(out.shape[0], out.shape[1], out.strides, sizeof(floating))


cdef Py_ssize_t _divergence_tiles(const floating[:, :, :] p, const floating[:, :, :] q,
                                  floating[:, :] out, int kind, bint validate,
                                  int n_threads) noexcept nogil:
    """divergence_strided_rows over every tile, split evenly between threads."""
    cdef Py_ssize_t n = p.shape[1], n_inner = p.shape[2]
    cdef Py_ssize_t n_units = tile_units(p.shape[0], n, n_inner), t, nt, bad_rows = 0
    nt = min(<Py_ssize_t>n_threads, n_units)
    if nt <= 1:  # one thread's work: no OpenMP region to start
        return divergence_strided_rows(&p[0, 0, 0], &q[0, 0, 0], n, n_inner, kind, validate,
                                       &out[0, 0], 0, n_units)
    for t in prange(nt, schedule='static', num_threads=nt):
        bad_rows += divergence_strided_rows(&p[0, 0, 0], &q[0, 0, 0], n, n_inner, kind,
                                            validate, &out[0, 0], t * n_units // nt,
                                            (t + 1) * n_units // nt)
    return bad_rows


def kl_rows(const floating[:, :, :] p, const floating[:, :, :] q, floating[:, :] out,
            bint validate, int n_threads):
    """out = sum rel_entr(p, q) over axis 1.  p, q: IN; out: OUT.

    Returns how many rows hold a negative or nan entry in p or q (0 when
    validate is False).
    """
    cdef Py_ssize_t n = p.shape[1], n_inner = p.shape[2]
    cdef Py_ssize_t n_rows = p.shape[0] * n_inner
    cdef Py_ssize_t ps = p.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t qs = q.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, o, i
    cdef Py_ssize_t bad_rows = 0
    if n_rows > 0 and _kl_short_layout(p, q, out):
        return _kl_short_rows(p, q, out, validate, n_threads)
    if _middle_c(p) and _middle_c(q) and _out_c(out):   # a middle axis: gathered tiles
        with nogil:
            bad_rows = _divergence_tiles(p, q, out, DIV_KL, validate, n_threads)
        return bad_rows
    if n_threads == 1:  # one thread's work: no OpenMP region to start
        with nogil:
            for r in range(n_rows):
                o = r // n_inner
                i = r % n_inner
                bad_rows += kl_row(&p[o, 0, i], ps, &q[o, 0, i], qs, n, validate, &out[o, i])
    else:
        for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
            o = r // n_inner
            i = r % n_inner
            bad_rows += kl_row(&p[o, 0, i], ps, &q[o, 0, i], qs, n, validate, &out[o, i])
    return bad_rows


cdef _entropy_rows(const floating[:, :, :] pk, const floating[:, :, :] qk,
                   floating[:, :] out, int n_threads, bint relative):
    """entropy_rows (relative False: qk is not read) or relative_entropy_rows."""
    cdef Py_ssize_t n = pk.shape[1], n_inner = pk.shape[2]
    cdef Py_ssize_t n_rows = pk.shape[0] * n_inner
    cdef Py_ssize_t ps = pk.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t qs = qk.strides[1] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t r, start, item = sizeof(floating)
    if (not relative and 2 <= n <= ENTR_SHORT_MAX and n_inner == 1 and n_rows > 0
            and ps == 1 and pk.strides[1] == item
            and (pk.strides[0] == n * item or n_rows == 1)
            and (out.strides[0] == item or n_rows == 1) and lm_simd_ready()):
        # many short contiguous rows: the across-rows kernel
        if n_threads == 1:
            with nogil:
                entropy_short_blocks(&pk[0, 0, 0], n_rows, n, &out[0, 0])
        else:
            for r in prange((n_rows + SHORT_BLOCK - 1) // SHORT_BLOCK, schedule='static',
                            num_threads=n_threads, nogil=True):
                start = r * SHORT_BLOCK
                entropy_short_block(&pk[start, 0, 0], min(<Py_ssize_t>SHORT_BLOCK, n_rows - start),
                                    n, &out[start, 0])
        return
    if _middle_c(pk) and (not relative or _middle_c(qk)) and _out_c(out):
        with nogil:   # a middle axis (scipy.stats.entropy's default axis 0): tiles
            _divergence_tiles(pk, qk, out, DIV_REL_ENTR if relative else DIV_ENTR, False,
                              n_threads)
        return
    if n_threads == 1:  # one thread's work: no OpenMP region to start
        with nogil:
            for r in range(n_rows):
                out[r // n_inner, r % n_inner] = <floating>entropy_row(
                    &pk[r // n_inner, 0, r % n_inner], ps,
                    &qk[r // n_inner, 0, r % n_inner] if relative else NULL, qs, n)
    else:
        for r in prange(n_rows, schedule='static', num_threads=n_threads, nogil=True):
            out[r // n_inner, r % n_inner] = <floating>entropy_row(
                &pk[r // n_inner, 0, r % n_inner], ps,
                &qk[r // n_inner, 0, r % n_inner] if relative else NULL, qs, n)


def entropy_rows(const floating[:, :, :] pk, floating[:, :] out, int n_threads):
    """out = sum entr(pk / sum(pk)) over axis 1 (scipy.stats.entropy).  OUT: out."""
    _entropy_rows(pk, pk, out, n_threads, False)


def relative_entropy_rows(const floating[:, :, :] pk, const floating[:, :, :] qk,
                          floating[:, :] out, int n_threads):
    """out = sum rel_entr(pk / sum(pk), qk / sum(qk)) over axis 1.  OUT: out."""
    _entropy_rows(pk, qk, out, n_threads, True)


cdef double kl_div_block(const floating* x, Py_ssize_t xs0, Py_ssize_t xs1,
                         const floating* t, Py_ssize_t ts0, Py_ssize_t ts1,
                         floating* terms, Py_ssize_t ls0, Py_ssize_t ls1,
                         floating* grad, Py_ssize_t gs0, Py_ssize_t gs1,
                         Py_ssize_t n, Py_ssize_t k0, Py_ssize_t nk, double neg_scale,
                         bint log_target, bint want_total) noexcept nogil:
    """Terms k0 .. k0 + nk (C order over rows of n) of kl_div; returns their
    pairwise sum (0.0 unless want_total).  terms / grad: OUT or NULL; grad may
    be x or t itself (each element is read before it is written)."""
    cdef double buf[SHORT_BLOCK]
    cdef Py_ssize_t r = k0 // n, j = k0 % n, seg, i, m = 0
    cdef const floating* xp
    cdef const floating* tp
    cdef double xd, td, w, term
    while m < nk:
        seg = min(n - j, nk - m)
        xp = x + r * xs0 + j * xs1
        tp = t + r * ts0 + j * ts1
        for i in range(seg):
            xd = xp[i * xs1]
            td = tp[i * ts1]
            if log_target:
                w = exp(td)
                term = w * (td - xd)
            else:
                w = td
                term = (0.0 if td == 0 else td * log(td)) - td * xd
            buf[m + i] = term
            if grad != NULL:
                grad[r * gs0 + (j + i) * gs1] = <floating>(neg_scale * w)
        if terms != NULL:
            for i in range(seg):
                terms[r * ls0 + (j + i) * ls1] = <floating>buf[m + i]
        m += seg
        r += 1
        j = 0
    return pairwise_sum(buf, nk) if want_total else 0.0


def kl_div_flat(const floating[:, :] x, const floating[:, :] t, floating[:, :] terms,
                floating[:, :] grad, double grad_scale, bint log_target, bint want_total,
                int n_threads):
    """torch's kl_div over a 2-D view: returns the sum of its terms (0.0
    unless want_total), blocked pairwise in C order (``rows.blocked_sum``).

    IN: x (log q), t (p, or log p with log_target): same shape, any strides
    (0 too).  OUT: terms (pointwise, or None) and grad (-grad_scale * t, or
    -grad_scale * exp(t), or None; it may be x or t itself, exactly).
    """
    cdef Py_ssize_t n_rows = x.shape[0], n = x.shape[1], item = sizeof(floating)
    cdef Py_ssize_t size = n_rows * n
    cdef Py_ssize_t n_blocks = (size + SHORT_BLOCK - 1) // SHORT_BLOCK, b
    cdef Py_ssize_t ls0 = 0, ls1 = 0, gs0 = 0, gs1 = 0
    cdef floating* lp = NULL
    cdef floating* gp = NULL
    cdef double* totals = NULL
    cdef double total = 0.0, neg_scale = -grad_scale
    if size == 0:
        return 0.0
    if terms is not None:
        lp = &terms[0, 0]
        ls0 = terms.strides[0] // item
        ls1 = terms.strides[1] // item
    if grad is not None:
        gp = &grad[0, 0]
        gs0 = grad.strides[0] // item
        gs1 = grad.strides[1] // item
    if want_total:
        totals = <double*>malloc(n_blocks * sizeof(double))
        if totals == NULL:
            raise MemoryError()
    n_threads = <int>min(<Py_ssize_t>n_threads, n_blocks)
    with nogil:
        if n_threads <= 1:   # one thread's work: no OpenMP region to start
            for b in range(n_blocks):
                total = kl_div_block(&x[0, 0], x.strides[0] // item, x.strides[1] // item,
                                     &t[0, 0], t.strides[0] // item, t.strides[1] // item,
                                     lp, ls0, ls1, gp, gs0, gs1, n, b * SHORT_BLOCK,
                                     min(<Py_ssize_t>SHORT_BLOCK, size - b * SHORT_BLOCK),
                                     neg_scale, log_target, want_total)
                if want_total:
                    totals[b] = total
        else:
            for b in prange(n_blocks, schedule='static', num_threads=n_threads):
                total = kl_div_block(&x[0, 0], x.strides[0] // item, x.strides[1] // item,
                                     &t[0, 0], t.strides[0] // item, t.strides[1] // item,
                                     lp, ls0, ls1, gp, gs0, gs1, n, b * SHORT_BLOCK,
                                     min(<Py_ssize_t>SHORT_BLOCK, size - b * SHORT_BLOCK),
                                     neg_scale, log_target, want_total)
                if want_total:
                    totals[b] = total
        if want_total:
            total = pairwise_sum(totals, n_blocks)
    free(totals)
    return total if want_total else 0.0
