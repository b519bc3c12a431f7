/* colpg's probe kernel: what colpg.probe computes in PyTorch, fused into one pass over the tokens.

   For every token under a probed centroid, its similarity with every query token is the centroid's
   score plus one table row per residual byte (colpg.codec's query table), and each document keeps,
   per query token, the best of its tokens. PyTorch does this in three passes through memory (gather
   the residuals, sum table rows into an [n, q] tensor, scatter the maxima per document); here a
   token's sums stay in registers from its first byte to its document's row, two tokens at a time
   so that their table reads overlap. GCC/Clang vector extensions, no intrinsics: the same source
   builds on any CPU the compiler targets. colpg.kernel compiles it at first use and calls it
   through ctypes, which releases the GIL, so parts of one probe run on threads side by side. */

#include <stdint.h>
#include <string.h>

/* Query tokens are taken LANES at a time; colpg.kernel pads the query to a multiple of it. */
#define LANES 32

typedef float vec __attribute__((vector_size(32)));
typedef int32_t mask __attribute__((vector_size(32)));

static inline vec load(const float *p) { vec v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vec v) { memcpy(p, &v, sizeof v); }
static inline vec larger(vec a, vec b) { mask m = a > b; return (vec)(((mask)a & m) | ((mask)b & ~m)); }

/* Give each document owning a token of ``cells`` a local number, in the order first met:
   local_of[slot] (-1: none yet) and slots[local]. Returns the documents numbered so far. */
int64_t colpg_number(const int64_t *offsets, const int32_t *owners, const int64_t *cells, int64_t ncells,
                     int32_t *local_of, int32_t *slots, int64_t numbered)
{
    for (int64_t i = 0; i < ncells; i++) {
        const int64_t cell = cells[i];
        for (int64_t t = offsets[cell]; t < offsets[cell + 1]; t++) {
            const int32_t slot = owners[t];
            if (local_of[slot] < 0) {
                local_of[slot] = (int32_t)numbered;
                slots[numbered++] = slot;
            }
        }
    }
    return numbered;
}

/* Raise a document's row by one token's sums. */
static inline void keep_best(float *row, vec s0, vec s1, vec s2, vec s3)
{
    store(row, larger(load(row), s0));
    store(row + 8, larger(load(row + 8), s1));
    store(row + 16, larger(load(row + 16), s2));
    store(row + 24, larger(load(row + 24), s3));
}

/* table [width * 256, q]: row (b * 256 + v) is what value v of residual byte b adds to each query
   token's similarity; cell_scores [ncells, q]: each probed centroid's score for each query token;
   best [numbered, q], -inf where no token has been scored yet, raised in place. q % LANES == 0. */
void colpg_score(const float *table, const float *cell_scores, int64_t q, int64_t width,
                 const int64_t *offsets, const uint8_t *residuals, const int32_t *owners,
                 const int64_t *cells, int64_t ncells, const int32_t *local_of, float *best)
{
    for (int64_t i = 0; i < ncells; i++) {
        const int64_t cell = cells[i], end = offsets[cell + 1];
        for (int64_t lane = 0; lane < q; lane += LANES) {
            const float *base = cell_scores + i * q + lane;
            int64_t t = offsets[cell];
            for (; t + 1 < end; t += 2) {
                const uint8_t *x = residuals + t * width, *y = x + width;
                vec a0 = load(base), a1 = load(base + 8), a2 = load(base + 16), a3 = load(base + 24);
                vec c0 = a0, c1 = a1, c2 = a2, c3 = a3;
                for (int64_t b = 0; b < width; b++) {
                    const float *r = table + ((b << 8) | x[b]) * q + lane, *s = table + ((b << 8) | y[b]) * q + lane;
                    a0 += load(r), a1 += load(r + 8), a2 += load(r + 16), a3 += load(r + 24);
                    c0 += load(s), c1 += load(s + 8), c2 += load(s + 16), c3 += load(s + 24);
                }
                keep_best(best + (int64_t)local_of[owners[t]] * q + lane, a0, a1, a2, a3);
                keep_best(best + (int64_t)local_of[owners[t + 1]] * q + lane, c0, c1, c2, c3);
            }
            if (t < end) {
                const uint8_t *x = residuals + t * width;
                vec a0 = load(base), a1 = load(base + 8), a2 = load(base + 16), a3 = load(base + 24);
                for (int64_t b = 0; b < width; b++) {
                    const float *r = table + ((b << 8) | x[b]) * q + lane;
                    a0 += load(r), a1 += load(r + 8), a2 += load(r + 16), a3 += load(r + 24);
                }
                keep_best(best + (int64_t)local_of[owners[t]] * q + lane, a0, a1, a2, a3);
            }
        }
    }
}
