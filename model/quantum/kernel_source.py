"""The C source of the CPU circuit kernel (built and called by :mod:`model.quantum.cpu_kernel`).

Lanes: a *group* holds ``V`` states lane by lane (amplitude ``i`` of lane ``v`` at
``re[i * V + v]``, real and imaginary planes apart), so a 2x2 gate on any qubit is a loop
over amplitude pairs whose body is one V-wide vector operation, each lane with its own
coefficients, and a permutation moves whole lane vectors.

One call (``qs_call``) runs a program over all ``S`` states: ``prog[o] >= 0`` applies gate
layer ``k`` (one 2x2 matrix per qubit; the gates of a layer act on different qubits and
commute), ``-1`` the permutation ``new[i] = old[perm[i]]``. Gate layer ``k`` of state ``s``
on qubit ``q`` is ``M E``: ``M`` the matrix of table layer ``layer_of[k]`` (identity when
-1) in table row ``row[s]``, and, when ``enc_of[k]``, ``E = RY(scale * enc[s, q])`` (the
angle encoding, applied first). With ``angles`` the kernel fills the table itself from
the rotation angles (Rot or RY, one row per weight set: a pack's member, an encoder);
without, the table holds given matrices, one row per state.

Outputs: the final state, and optionally its probabilities and observables
``obs[s, f] = sum_i |psi_i|^2 R[i, f]`` (R = the Z signs: the Pauli-Z readout), summed in
double. The backward is adjoint differentiation: from the output it un-computes the
state gate by gate (``psi <- G^H psi``), adds ``lam psi^H`` over the qubit's amplitude
pairs to the gate's gradient (float sums over blocks of BLOCK pairs, added in double) and
applies ``G^H`` to ``lam = dL/dpsi*``; the gradients of ``M`` go on to the table (summed
in double over the states of a row) and the angles, those of ``E`` to ``enc``.

Threads (OpenMP; the library links the libgomp that torch loaded, so its workers are the
ones torch's ops use, and nothing spins against them): each thread takes a contiguous
share of the groups with its own planes ("group split"); when there are fewer groups than
threads and a state is large enough (``INTRA_PAIRS`` amplitude pairs per thread and gate),
all threads work on one group at a time, each on its share of every gate's pairs, with a
barrier after every gate ("state split"). The result of a gate does not depend on the
split; gradient sums are added in thread order, so the last bits of a gradient may differ
between thread counts.
"""

SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#define TID() omp_get_thread_num()
#define SYNC(shared) do { if (shared) { _Pragma("omp barrier") } } while (0)
#else
#define TID() 0
#define SYNC(shared) do { (void)(shared); } while (0)
#endif

/* V (-DV): states per group; NQ (-DNQ): qubits */
#define HOT static inline __attribute__((always_inline))
#define N_AMP (1 << NQ)
#define BLOCK 64            /* pairs summed in float before adding to the double sums */
#define INTRA_PAIRS 2048    /* state split: at least this many pairs per thread and gate */
#define CACHE_BYTES (4u << 20) /* planes kept per thread between calls (14 qubits) */

typedef float vf __attribute__((vector_size(4 * V)));
typedef double vd __attribute__((vector_size(8 * V)));

HOT vf ld(const float *p) { vf x; memcpy(&x, p, sizeof(x)); return x; }
HOT void st_(float *p, vf x) { memcpy(p, &x, sizeof(x)); }

typedef struct {
    int32_t S, n, threads;
    int32_t in_kind, in_dim;       /* 0: |0..0>; 1: real (S, in_dim), zero-padded; 2: complex (S, N) */
    const float *in;
    int32_t K, n_ops;              /* gate layers; program length */
    const int32_t *prog, *perm, *inverse;
    float *table;                  /* 2x2 complex matrices, 8 floats each */
    int32_t rows, layers;
    int64_t row_stride, layer_stride; /* matrix of (row, layer, q): ((row*rs + layer*ls) * n + q) */
    const int32_t *row;            /* (S,) table row of each state; NULL: the state's own */
    const int32_t *layer_of, *enc_of; /* (K,) */
    const float *enc;              /* (S, n) encoding angles / scale, or NULL */
    float *trig;                   /* (S, n, 2) cos, sin of half the encoding angles (filled here) */
    float scale;
    const float *angles;           /* (layers, rows, n, P) rotation angles, or NULL */
    int32_t kind;                  /* 0: Rot(phi, theta, omega) (P = 3), 1: RY(theta) (P = 1) */
    int32_t F;
    const float *readout;          /* (N, F) */
    float *out, *probs, *obs;      /* (S, N) complex; (S, N) or NULL; (S, F) or NULL */
    const float *grad_out, *grad_probs, *grad_obs; /* each NULL when not given */
    float *grad_in;                /* like in (real: its first in_dim amplitudes), or NULL */
    float *grad_table;             /* like table (no angles), or NULL */
    float *grad_angles;            /* like angles, or NULL */
    float *grad_enc;               /* (S, n) dL/d enc, or NULL */
} qs_call;

typedef struct { int part, parts; } team_t;

HOT void span(int total, team_t t, int *a, int *b) {
    *a = (int)((int64_t)total * t.part / t.parts);
    *b = (int)((int64_t)total * (t.part + 1) / t.parts);
}

/* --- scratch planes: kept per thread between calls up to CACHE_BYTES --------------- */
static __thread float *tls_buf;
static __thread size_t tls_bytes;

static float *scratch(size_t floats, int *own) {
    size_t bytes = floats * sizeof(float);
    void *p = NULL;
    *own = 0;
    if (bytes <= tls_bytes) return tls_buf;
    if (bytes > CACHE_BYTES) {
        *own = 1;
        return posix_memalign(&p, 64, bytes) ? NULL : (float *)p;
    }
    free(tls_buf);
    tls_buf = posix_memalign(&p, 64, bytes) ? NULL : (float *)p;
    tls_bytes = tls_buf ? bytes : 0;
    return tls_buf;
}

/* threads for a call, and whether they split states (1) or groups (0) */
static int plan(const qs_call *a, int *shared) {
    int groups = (a->S + V - 1) / V, t = a->threads > 0 ? a->threads : 1;
#ifndef _OPENMP
    t = 1;
#endif
    int intra = (N_AMP / 2) / INTRA_PAIRS;
    *shared = 0;
    if (groups < t && intra > groups) {
        *shared = 1;
        return t < intra ? t : intra;
    }
    return groups < t ? groups : t;
}

/* --- gate matrices -------------------------------------------------------------------- */
static size_t mat_at(const qs_call *a, int row, int layer, int q) {
    return (((size_t)row * a->row_stride + (size_t)layer * a->layer_stride) * NQ + q) * 8;
}

/* the table from the angles: Rot = RZ(omega) RY(theta) RZ(phi) or RY(theta) */
static void fill_table(const qs_call *a) {
    size_t count = (size_t)a->layers * a->rows * NQ;
    int P = a->kind == 0 ? 3 : 1;
    for (size_t e = 0; e < count; e++) {
        const float *w = a->angles + e * P;
        float *m = a->table + e * 8;
        if (a->kind == 0) {
            double c = cos(0.5 * w[1]), s = sin(0.5 * w[1]);
            double plus = 0.5 * (w[0] + w[2]), minus = 0.5 * (w[0] - w[2]);
            double mag[4] = {c, -s, s, c}, ph[4] = {-plus, minus, -minus, plus};
            for (int j = 0; j < 4; j++) {
                m[2 * j] = (float)(mag[j] * cos(ph[j]));
                m[2 * j + 1] = (float)(mag[j] * sin(ph[j]));
            }
        } else {
            double c = cos(0.5 * w[0]), s = sin(0.5 * w[0]);
            float r[8] = {(float)c, 0, (float)-s, 0, (float)s, 0, (float)c, 0};
            memcpy(m, r, sizeof(r));
        }
    }
}

/* dL/dangles from dL/dtable (PyTorch's convention: g = dL/dRe + i dL/dIm) */
static void table_grad(const qs_call *a, const double *gt) {
    size_t count = (size_t)a->layers * a->rows * NQ;
    int P = a->kind == 0 ? 3 : 1;
    for (size_t e = 0; e < count; e++) {
        const float *w = a->angles + e * P;
        const double *g = gt + e * 8;
        float *out = a->grad_angles + e * P;
        if (a->kind == 0) {
            double c = cos(0.5 * w[1]), s = sin(0.5 * w[1]);
            double plus = 0.5 * (w[0] + w[2]), minus = 0.5 * (w[0] - w[2]);
            double mag[4] = {c, -s, s, c}, ph[4] = {-plus, minus, -minus, plus};
            double dmag[4] = {-0.5 * s, -0.5 * c, 0.5 * c, -0.5 * s};
            double dphi[4] = {-0.5, 0.5, -0.5, 0.5}, domega[4] = {-0.5, -0.5, 0.5, 0.5};
            double gphi = 0, gtheta = 0, gomega = 0;
            for (int j = 0; j < 4; j++) {
                double cp = cos(ph[j]), sp = sin(ph[j]), gr = g[2 * j], gi = g[2 * j + 1];
                double by_phase = mag[j] * (gi * cp - gr * sp);
                gtheta += (gr * cp + gi * sp) * dmag[j];
                gphi += by_phase * dphi[j];
                gomega += by_phase * domega[j];
            }
            out[0] = (float)gphi;
            out[1] = (float)gtheta;
            out[2] = (float)gomega;
        } else {
            double c = cos(0.5 * w[0]), s = sin(0.5 * w[0]);
            out[0] = (float)(0.5 * (-s * g[0] - c * g[2] + c * g[4] - s * g[6]));
        }
    }
}

/* gate layer k of state s on qubit q: G = M E (double), and M */
static void lane_gate(const qs_call *a, int s, int k, int q, double G[8], double M[8]) {
    static const double eye[8] = {1, 0, 0, 0, 0, 0, 1, 0};
    int L = a->layer_of[k];
    if (L >= 0) {
        const float *m = a->table + mat_at(a, a->row ? a->row[s] : s, L, q);
        for (int e = 0; e < 8; e++) M[e] = m[e];
    } else {
        memcpy(M, eye, sizeof(eye));
    }
    if (!a->enc_of[k]) { memcpy(G, M, 8 * sizeof(double)); return; }
    double c = a->trig[((size_t)s * NQ + q) * 2], sn = a->trig[((size_t)s * NQ + q) * 2 + 1];
    double E[2][2] = {{c, -sn}, {sn, c}};
    for (int r = 0; r < 2; r++)
        for (int col = 0; col < 2; col++)
            for (int p = 0; p < 2; p++) /* re, im */
                G[2 * (2 * r + col) + p] =
                    M[2 * (2 * r) + p] * E[0][col] + M[2 * (2 * r + 1) + p] * E[1][col];
}

/* per-lane coefficients of gate layer k (lanes past the group's states: identity);
   adjoint: G^H = [[a*, c*], [b*, d*]] */
static void coefficients(const qs_call *a, int k, int g0, int lanes, int adjoint,
                         float (*c)[8][V]) {
    for (int q = 0; q < NQ; q++)
        for (int v = 0; v < V; v++) {
            double G[8] = {1, 0, 0, 0, 0, 0, 1, 0}, M[8];
            if (v < lanes) lane_gate(a, g0 + v, k, q, G, M);
            if (adjoint) {
                double h[8] = {G[0], -G[1], G[4], -G[5], G[2], -G[3], G[6], -G[7]};
                memcpy(G, h, sizeof(h));
            }
            for (int e = 0; e < 8; e++) c[q][e][v] = (float)G[e];
        }
}

/* dL/dG of lane v (acc) -> the table (dL/dM = dL/dG E^T) and enc (dL/dE = M^H dL/dG) */
static void chain(const qs_call *a, int k, int q, int g0, int lanes, const vd acc[8],
                  double *gt, double *genc) {
    int L = a->layer_of[k];
    for (int v = 0; v < lanes; v++) {
        int s = g0 + v;
        double g[8], G[8], M[8];
        for (int e = 0; e < 8; e++) g[e] = acc[e][v];
        if (a->enc_of[k]) {
            lane_gate(a, s, k, q, G, M);
            double c = a->trig[((size_t)s * NQ + q) * 2], sn = a->trig[((size_t)s * NQ + q) * 2 + 1];
            double E[2][2] = {{c, -sn}, {sn, c}}, dE[2][2] = {{-0.5 * sn, -0.5 * c}, {0.5 * c, -0.5 * sn}};
            double gm[8], d = 0;
            for (int r = 0; r < 2; r++)
                for (int col = 0; col < 2; col++) {
                    for (int p = 0; p < 2; p++)
                        gm[2 * (2 * r + col) + p] =
                            g[2 * (2 * r) + p] * E[col][0] + g[2 * (2 * r + 1) + p] * E[col][1];
                    double re_ge = 0; /* Re (M^H g)[r][col] */
                    for (int j = 0; j < 2; j++)
                        re_ge += M[2 * (2 * j + r)] * g[2 * (2 * j + col)] +
                                 M[2 * (2 * j + r) + 1] * g[2 * (2 * j + col) + 1];
                    d += re_ge * dE[r][col];
                }
            genc[(size_t)s * NQ + q] += a->scale * d;
            memcpy(g, gm, sizeof(gm));
        }
        if (L >= 0) {
            double *dst = gt + mat_at(a, a->row ? a->row[s] : s, L, q);
            for (int e = 0; e < 8; e++) dst[e] += g[e];
        }
    }
}

/* --- passes over a group's planes --------------------------------------------------- */
/* one 2x2 gate on pairs [p0, p1) of the qubit whose amplitudes pair up at 2^lg */
HOT void gate(float *re, float *im, int lg, int p0, int p1, const float c[8][V]) {
    const vf c0 = ld(c[0]), c1 = ld(c[1]), c2 = ld(c[2]), c3 = ld(c[3]);
    const vf c4 = ld(c[4]), c5 = ld(c[5]), c6 = ld(c[6]), c7 = ld(c[7]);
    const int st = 1 << lg;
    for (int p = p0; p < p1;) {
        int off = p & (st - 1), run = st - off < p1 - p ? st - off : p1 - p;
        size_t j0 = ((size_t)(p >> lg) << (lg + 1)) + off;
        for (size_t j = j0; j < j0 + run; j++) {
            size_t a = j * V, b = (j + st) * V;
            vf x0r = ld(re + a), x0i = ld(im + a), x1r = ld(re + b), x1i = ld(im + b);
            st_(re + a, c0 * x0r - c1 * x0i + c2 * x1r - c3 * x1i);
            st_(im + a, c0 * x0i + c1 * x0r + c2 * x1i + c3 * x1r);
            st_(re + b, c4 * x0r - c5 * x0i + c6 * x1r - c7 * x1i);
            st_(im + b, c4 * x0i + c5 * x0r + c6 * x1i + c7 * x1r);
        }
        p += run;
    }
}

/* One gate of the backward in one pass over pairs [p0, p1), h = G^H per lane: psi (the
   gate's output) becomes its input h psi, acc = sum of lam psi_in^H, lam becomes h lam. */
HOT void gate_back(float *pr, float *pi, float *lr, float *li, int lg, int p0, int p1,
                   const float h[8][V], vd acc[8]) {
    const vf h0 = ld(h[0]), h1 = ld(h[1]), h2 = ld(h[2]), h3 = ld(h[3]);
    const vf h4 = ld(h[4]), h5 = ld(h[5]), h6 = ld(h[6]), h7 = ld(h[7]);
    const int st = 1 << lg;
    vd d[8] = {{0}};
    for (int pc = p0; pc < p1; pc += BLOCK) {
        int pe = pc + BLOCK < p1 ? pc + BLOCK : p1;
        vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, s4 = {0}, s5 = {0}, s6 = {0}, s7 = {0};
        for (int p = pc; p < pe;) {
            int off = p & (st - 1), run = st - off < pe - p ? st - off : pe - p;
            size_t j0 = ((size_t)(p >> lg) << (lg + 1)) + off;
            for (size_t j = j0; j < j0 + run; j++) {
                size_t a = j * V, b = (j + st) * V;
                vf y0r = ld(pr + a), y0i = ld(pi + a), y1r = ld(pr + b), y1i = ld(pi + b);
                vf xr = h0 * y0r - h1 * y0i + h2 * y1r - h3 * y1i;
                vf xi = h0 * y0i + h1 * y0r + h2 * y1i + h3 * y1r;
                vf yr = h4 * y0r - h5 * y0i + h6 * y1r - h7 * y1i;
                vf yi = h4 * y0i + h5 * y0r + h6 * y1i + h7 * y1r;
                st_(pr + a, xr); st_(pi + a, xi); st_(pr + b, yr); st_(pi + b, yi);
                vf ar = ld(lr + a), ai = ld(li + a), br = ld(lr + b), bi = ld(li + b);
                s0 += ar * xr + ai * xi; s1 += ai * xr - ar * xi; /* lam0 psi0* */
                s2 += ar * yr + ai * yi; s3 += ai * yr - ar * yi; /* lam0 psi1* */
                s4 += br * xr + bi * xi; s5 += bi * xr - br * xi; /* lam1 psi0* */
                s6 += br * yr + bi * yi; s7 += bi * yr - br * yi; /* lam1 psi1* */
                st_(lr + a, h0 * ar - h1 * ai + h2 * br - h3 * bi);
                st_(li + a, h0 * ai + h1 * ar + h2 * bi + h3 * br);
                st_(lr + b, h4 * ar - h5 * ai + h6 * br - h7 * bi);
                st_(li + b, h4 * ai + h5 * ar + h6 * bi + h7 * br);
            }
            p += run;
        }
        d[0] += __builtin_convertvector(s0, vd); d[1] += __builtin_convertvector(s1, vd);
        d[2] += __builtin_convertvector(s2, vd); d[3] += __builtin_convertvector(s3, vd);
        d[4] += __builtin_convertvector(s4, vd); d[5] += __builtin_convertvector(s5, vd);
        d[6] += __builtin_convertvector(s6, vd); d[7] += __builtin_convertvector(s7, vd);
    }
    for (int e = 0; e < 8; e++) acc[e] = d[e];
}

/* new[i] = old[perm[i]] for i in [i0, i1) into the spare planes, which then trade places */
HOT void permute(float **re, float **im, float **tr, float **ti, const int32_t *perm, int i0,
                 int i1) {
    float *a = *re, *b = *im, *c = *tr, *d = *ti;
    for (int i = i0; i < i1; i++) {
        st_(c + (size_t)i * V, ld(a + (size_t)perm[i] * V));
        st_(d + (size_t)i * V, ld(b + (size_t)perm[i] * V));
    }
    *re = c; *im = d; *tr = a; *ti = b;
}

/* --- one group: forward --------------------------------------------------------------- */
static void forward_group(const qs_call *a, int g0, float *buf, team_t t, int shared,
                          double *oslots) {
    const size_t P = (size_t)N_AMP * V;
    const int lanes = a->S - g0 < V ? a->S - g0 : V, F = a->F;
    float *re = buf, *im = buf + P, *tr = buf + 2 * P, *ti = buf + 3 * P;
    float c[NQ][8][V];
    int i0, i1, p0, p1;
    span(N_AMP, t, &i0, &i1);
    span(N_AMP / 2, t, &p0, &p1);
    for (int i = i0; i < i1; i++)
        for (int v = 0; v < V; v++) {
            size_t at = (size_t)i * V + v, s = (size_t)g0 + v;
            float x = 0, y = 0;
            if (v < lanes) {
                if (a->in_kind == 0) x = i == 0;
                else if (a->in_kind == 1) x = i < a->in_dim ? a->in[s * a->in_dim + i] : 0;
                else { x = a->in[2 * (s * N_AMP + i)]; y = a->in[2 * (s * N_AMP + i) + 1]; }
            }
            re[at] = x;
            im[at] = y;
        }
    SYNC(shared);
    for (int o = 0; o < a->n_ops; o++) {
        int k = a->prog[o];
        if (k < 0) {
            permute(&re, &im, &tr, &ti, a->perm, i0, i1);
            SYNC(shared);
            continue;
        }
        coefficients(a, k, g0, lanes, 0, c);
        for (int q = 0; q < NQ; q++) {
            gate(re, im, NQ - 1 - q, p0, p1, c[q]);
            SYNC(shared);
        }
    }
    vd acc[F > 0 ? F : 1];
    for (int f = 0; f < F; f++) acc[f] = (vd){0};
    for (int i = i0; i < i1; i++) {
        vf r = ld(re + (size_t)i * V), m = ld(im + (size_t)i * V), p = r * r + m * m;
        for (int v = 0; v < lanes; v++) {
            size_t o2 = (size_t)(g0 + v) * N_AMP + i;
            a->out[2 * o2] = r[v];
            a->out[2 * o2 + 1] = m[v];
            if (a->probs) a->probs[o2] = p[v];
        }
        if (a->obs) {
            vd pd = __builtin_convertvector(p, vd);
            for (int f = 0; f < F; f++) acc[f] += pd * (double)a->readout[(size_t)i * F + f];
        }
    }
    if (!a->obs) return;
    if (!shared) {
        for (int v = 0; v < lanes; v++)
            for (int f = 0; f < F; f++) a->obs[(size_t)(g0 + v) * F + f] = (float)acc[f][v];
        return;
    }
    double *mine = oslots + (size_t)TID() * V * F;
    for (int f = 0; f < F; f++)
        for (int v = 0; v < V; v++) mine[(size_t)v * F + f] = acc[f][v];
    SYNC(shared);
    if (TID() == 0)
        for (int v = 0; v < lanes; v++)
            for (int f = 0; f < F; f++) {
                double sum = 0;
                for (int w = 0; w < t.parts; w++) sum += oslots[((size_t)w * V + v) * F + f];
                a->obs[(size_t)(g0 + v) * F + f] = (float)sum;
            }
}

/* --- one group: backward -------------------------------------------------------------- */
static void backward_group(const qs_call *a, int g0, float *buf, team_t t, int shared,
                           double *slots, int *parity, double *gt, double *genc) {
    const size_t P = (size_t)N_AMP * V;
    const int lanes = a->S - g0 < V ? a->S - g0 : V, F = a->F;
    float *pr = buf, *pi = buf + P, *lr = buf + 2 * P, *li = buf + 3 * P;
    float *tr = buf + 4 * P, *ti = buf + 5 * P;
    float h[NQ][8][V];
    int i0, i1, p0, p1;
    span(N_AMP, t, &i0, &i1);
    span(N_AMP / 2, t, &p0, &p1);
    vf gob[F > 0 ? F : 1];
    for (int f = 0; f < F; f++)
        for (int v = 0; v < V; v++)
            gob[f][v] = a->grad_obs && v < lanes ? a->grad_obs[(size_t)(g0 + v) * F + f] : 0;
    for (int i = i0; i < i1; i++) {
        vf x = {0}, y = {0}, gr = {0}, gi = {0}, w = {0};
        for (int v = 0; v < lanes; v++) {
            size_t o2 = (size_t)(g0 + v) * N_AMP + i;
            x[v] = a->out[2 * o2];
            y[v] = a->out[2 * o2 + 1];
            if (a->grad_out) { gr[v] = a->grad_out[2 * o2]; gi[v] = a->grad_out[2 * o2 + 1]; }
            if (a->grad_probs) w[v] = a->grad_probs[o2];
        }
        if (a->grad_obs)
            for (int f = 0; f < F; f++) w += gob[f] * a->readout[(size_t)i * F + f];
        st_(pr + (size_t)i * V, x);
        st_(pi + (size_t)i * V, y);
        st_(lr + (size_t)i * V, gr + 2 * w * x);
        st_(li + (size_t)i * V, gi + 2 * w * y);
    }
    SYNC(shared);
    for (int o = a->n_ops - 1; o >= 0; o--) {
        int k = a->prog[o];
        if (k < 0) { /* each permute leaves the planes it read as the spare ones */
            permute(&lr, &li, &tr, &ti, a->inverse, i0, i1);
            SYNC(shared);
            permute(&pr, &pi, &tr, &ti, a->inverse, i0, i1);
            SYNC(shared);
            continue;
        }
        coefficients(a, k, g0, lanes, 1, h);
        for (int q = NQ - 1; q >= 0; q--) {
            vd acc[8];
            gate_back(pr, pi, lr, li, NQ - 1 - q, p0, p1, h[q], acc);
            if (!shared) {
                chain(a, k, q, g0, lanes, acc, gt, genc);
                continue;
            }
            /* partial sums: written by every thread, added in thread order by thread 0;
               two slot sets, so that the next gate's sums never overwrite unread ones */
            double *set = slots + (size_t)*parity * t.parts * 8 * V;
            for (int e = 0; e < 8; e++)
                for (int v = 0; v < V; v++) set[((size_t)TID() * 8 + e) * V + v] = acc[e][v];
            *parity ^= 1;
            SYNC(shared);
            if (TID() == 0) {
                vd sum[8] = {{0}};
                for (int w = 0; w < t.parts; w++)
                    for (int e = 0; e < 8; e++)
                        for (int v = 0; v < V; v++) sum[e][v] += set[((size_t)w * 8 + e) * V + v];
                chain(a, k, q, g0, lanes, sum, gt, genc);
            }
        }
    }
    if (!a->grad_in) return;
    for (int i = i0; i < i1; i++)
        for (int v = 0; v < lanes; v++) {
            size_t s = (size_t)g0 + v, at = (size_t)i * V + v;
            if (a->in_kind == 1) {
                if (i < a->in_dim) a->grad_in[s * a->in_dim + i] = lr[at];
            } else {
                a->grad_in[2 * (s * N_AMP + i)] = lr[at];
                a->grad_in[2 * (s * N_AMP + i) + 1] = li[at];
            }
        }
}

static void fill_trig(const qs_call *a) {
    for (size_t e = 0; e < (size_t)a->S * NQ; e++) {
        double half = 0.5 * a->scale * a->enc[e];
        a->trig[2 * e] = (float)cos(half);
        a->trig[2 * e + 1] = (float)sin(half);
    }
}

int qs_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* threads a call of S states would use with `threads` offered; state split when *shared */
int qs_plan(int S, int threads, int *shared) {
    qs_call a;
    memset(&a, 0, sizeof(a));
    a.S = S;
    a.threads = threads;
    return S > 0 ? plan(&a, shared) : 0;
}

/* 0, or why the call does not fit: 2 qubit count, 3 a table row, 4 no encoding angles for an
   encoding layer, 5 a weight layer past the table (the fields index memory unchecked) */
static int check(const qs_call *a) {
    if (a->n != NQ) return 2;
    for (int s = 0; a->row && s < a->S; s++)
        if (a->row[s] < 0 || a->row[s] >= a->rows) return 3;
    for (int k = 0; k < a->K; k++) {
        if (a->enc_of[k] && !a->enc) return 4;
        if (a->layer_of[k] >= a->layers) return 5;
    }
    return 0;
}

int qs_forward(const qs_call *a) {
    int bad = check(a);
    if (bad) return bad;
    if (a->angles) fill_table(a);
    if (a->enc) fill_trig(a);
    if (a->S == 0) return 0;
    int shared, nt = plan(a, &shared), groups = (a->S + V - 1) / V, own = 0, err = 0;
    float *sbuf = NULL;
    double *oslots = NULL;
    if (shared) {
        sbuf = scratch(4 * (size_t)N_AMP * V, &own);
        oslots = malloc(sizeof(double) * nt * V * (a->F > 0 ? a->F : 1));
        if (!sbuf || !oslots) { if (own) free(sbuf); free(oslots); return 1; }
    }
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : err)
    {
        int tid = TID(), mine = 0;
        team_t t = {shared ? tid : 0, shared ? nt : 1};
        int ga = shared ? 0 : (int)((int64_t)groups * tid / nt);
        int gb = shared ? groups : (int)((int64_t)groups * (tid + 1) / nt);
        float *buf = shared ? sbuf : scratch(4 * (size_t)N_AMP * V, &mine);
        if (!buf) err = 1;
        else
            for (int g = ga; g < gb; g++) forward_group(a, g * V, buf, t, shared, oslots);
        if (mine) free(buf);
    }
    if (own) free(sbuf);
    free(oslots);
    return err;
}

int qs_backward(const qs_call *a) {
    int bad = check(a);
    if (bad) return bad;
    if (a->S == 0) return 0;
    int shared, nt = plan(a, &shared), groups = (a->S + V - 1) / V, own = 0, err = 0;
    size_t tsize = (size_t)a->rows * a->layers * NQ * 8;
    /* per-thread table sums where states share rows (group split), else one */
    int priv = !shared && a->row && nt > 1;
    double *gt = calloc(tsize * (priv ? nt : 1) + 1, sizeof(double));
    double *genc = calloc((size_t)a->S * NQ + 1, sizeof(double));
    float *sbuf = NULL;
    double *slots = NULL;
    if (shared) {
        sbuf = scratch(6 * (size_t)N_AMP * V, &own);
        slots = malloc(sizeof(double) * 2 * nt * 8 * V);
    }
    if (!gt || !genc || (shared && (!sbuf || !slots))) {
        free(gt); free(genc); free(slots);
        if (own) free(sbuf);
        return 1;
    }
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : err)
    {
        int tid = TID(), mine = 0, parity = 0;
        team_t t = {shared ? tid : 0, shared ? nt : 1};
        int ga = shared ? 0 : (int)((int64_t)groups * tid / nt);
        int gb = shared ? groups : (int)((int64_t)groups * (tid + 1) / nt);
        float *buf = shared ? sbuf : scratch(6 * (size_t)N_AMP * V, &mine);
        double *my_gt = gt + (priv ? tsize * tid : 0);
        if (!buf) err = 1;
        else
            for (int g = ga; g < gb; g++)
                backward_group(a, g * V, buf, t, shared, slots, &parity, my_gt, genc);
        if (mine) free(buf);
    }
    if (own) free(sbuf);
    free(slots);
    if (!err) {
        for (int w = 1; priv && w < nt; w++)
            for (size_t e = 0; e < tsize; e++) gt[e] += gt[tsize * w + e];
        if (a->angles && a->grad_angles) table_grad(a, gt);
        if (!a->angles && a->grad_table)
            for (size_t e = 0; e < tsize; e++) a->grad_table[e] = (float)gt[e];
        if (a->grad_enc)
            for (size_t e = 0; e < (size_t)a->S * NQ; e++) a->grad_enc[e] = (float)genc[e];
    }
    free(gt);
    free(genc);
    return err;
}
"""
