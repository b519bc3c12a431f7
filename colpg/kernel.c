/* colpg's CPU kernels (built and loaded by colpg.native): the probe's and the int8 rerank store's.

   The probe (colpg.kernel): what colpg.probe computes in PyTorch, fused into one pass over the tokens.

   For every token under a probed centroid, its similarity with every query token is the centroid's
   score plus one table row per residual byte (colpg.codec's query table), and each document keeps,
   per query token, the best of its tokens. PyTorch does this in three passes through memory (gather
   the residuals, sum table rows into an [n, q] tensor, scatter the maxima per document); here a
   token's sums stay in registers from its first byte to its document's row, four tokens at a time
   so that their table reads overlap. The table is int16, scaled by colpg.kernel: a token's sums for
   all LANES query tokens are one 64-byte vector with AVX-512, one add a residual byte, and two
   32-byte ones elsewhere (WIDEST, below). GCC/Clang vector extensions, no intrinsics: the
   same source builds on any CPU the compiler targets. colpg.native compiles it at first use and
   calls it through ctypes, which releases the GIL, so parts of one probe or rerank run on threads. */

#include <sched.h>
#include <stdint.h>
#include <string.h>

/* Query tokens are taken LANES at a time; colpg.kernel reads colpg_lanes and pads the query to a multiple. */
#define LANES 32
const int64_t colpg_lanes = LANES;

typedef float vec __attribute__((vector_size(32)));
typedef int32_t mask __attribute__((vector_size(32)));
typedef int32_t ints __attribute__((vector_size(32)));
typedef int16_t shorts __attribute__((vector_size(32)));
typedef int16_t half_shorts __attribute__((vector_size(16)));
/* The probe's vectors are the CPU's widest: 64 bytes with AVX-512, else 32. A token's sums for its LANES
   query tokens are PIECES of them (one with AVX-512); on an AVX2 CPU, 64-byte vectors that the compiler
   splits in two made the probe's loop 2.5x slower than 32-byte ones (bench/README.md, session 28). */
#if defined(__AVX512F__)
#define WIDEST 64
#else
#define WIDEST 32
#endif
#define PIECES (2 * LANES / WIDEST)
typedef int16_t piece __attribute__((vector_size(WIDEST)));
typedef int16_t half_piece __attribute__((vector_size(WIDEST / 2)));
typedef int32_t piece_ints __attribute__((vector_size(WIDEST)));
typedef float piece_floats __attribute__((vector_size(WIDEST)));
typedef struct { piece part[PIECES]; } lane_shorts;

static inline vec load(const float *p) { vec v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vec v) { memcpy(p, &v, sizeof v); }
static inline vec larger(vec a, vec b) { mask m = a > b; return (vec)(((mask)a & m) | ((mask)b & ~m)); }
static inline float lane_sum(vec v)
{
    float s = 0.0f;
    for (int i = 0; i < 8; i++) s += v[i];
    return s;
}


/* Eight of sixteen integer sums as floats: ``half`` 0 the first eight, 1 the last. */
static inline vec to_float(shorts sums, int half)
{
    half_shorts part;
    memcpy(&part, (const char *)&sums + 16 * half, sizeof part);
    return __builtin_convertvector(__builtin_convertvector(part, ints), vec);
}

/* The parts of one call (colpg.threads.run_parts) share its items (cells, rows): shared[0] is the next
   item no part has claimed, so a part that starts late takes what is left instead of what was set aside
   for it. A thread pool's thread woken on the other CPU started its part 0.1-5 ms late on this project's
   VMs, and a fixed half for it made the caller wait that long, idle, at every probe and rerank step
   (bench/README.md, session 18). shared[p] for p >= 1 is part p's state. Part 0, the caller's, cancels
   the parts that have not started once no item is left and waits for the running ones to finish theirs,
   so the call is complete when part 0 returns; a cancelled part returns without touching anything. */
enum { PART_WAITING, PART_RUNNING, PART_DONE, PART_CANCELLED };
#define SPINS 4096

static inline void spin_hint(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* Whether part ``part`` is to run: part 0 always, another unless part 0 cancelled it first. */
static int part_begins(int64_t *shared, int64_t part)
{
    int64_t waiting = PART_WAITING;
    return part == 0 || __atomic_compare_exchange_n(shared + part, &waiting, PART_RUNNING, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static inline int64_t claim(int64_t *shared) { return __atomic_fetch_add(shared, 1, __ATOMIC_RELAXED); }

/* A part's end: part 0 cancels the parts not started and waits for the running ones (each is within its last item). */
static void part_ends(int64_t *shared, int64_t part, int64_t parts)
{
    if (part) {
        __atomic_store_n(shared + part, PART_DONE, __ATOMIC_RELEASE);
        return;
    }
    for (int64_t p = 1; p < parts; p++) {
        int64_t waiting = PART_WAITING;
        if (__atomic_compare_exchange_n(shared + p, &waiting, PART_CANCELLED, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            continue;
        /* spin briefly (an item takes well under a millisecond), then yield: with more searching threads
           than CPUs, the part being waited for may need this CPU to finish */
        for (int64_t spins = 0; __atomic_load_n(shared + p, __ATOMIC_ACQUIRE) != PART_DONE; spins++) {
            if (spins < SPINS) spin_hint();
            else sched_yield();
        }
    }
}

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

static inline piece_floats load_floats(const float *p) { piece_floats v; memcpy(&v, p, sizeof v); return v; }
static inline piece load_piece(const int16_t *p) { piece v; memcpy(&v, p, sizeof v); return v; }

/* Raise a document's row by one token's similarities: the cell's score plus its sums, scaled;
   WIDEST / 4 query tokens at a time, each half of a piece of sums converted to floats. */
static inline void keep_best(float *row, const float *base, const float *scale, const lane_shorts *sums)
{
    enum { FLOATS = WIDEST / 4 };
    for (int at = 0; at < LANES; at += FLOATS) {
        half_piece half;
        memcpy(&half, (const int16_t *)sums->part + at, sizeof half);
        const piece_floats old = load_floats(row + at);
        const piece_floats now = load_floats(base + at) + __builtin_convertvector(__builtin_convertvector(half, piece_ints), piece_floats) * load_floats(scale + at);
        const piece_ints m = (piece_ints)(old > now);
        const piece_floats kept = (piece_floats)(((piece_ints)old & m) | ((piece_ints)now & ~m));
        memcpy(row + at, &kept, sizeof kept);
    }
}

/* Tokens of a cell summed together, SPAN residual bytes at a time: the table rows of SPAN bytes
   (SPAN * 256 rows of LANES int16, 128 KB at SPAN 8) stay in the L2 cache while BATCH tokens'
   sums (4 KB at 32 lanes) wait in L1 between spans. Token by token over all bytes, the table's
   1.5 MB (96 bytes of 2-bit residuals at 384 dims) came from L3 at every lookup: this order took
   the assembled 100k's probe from 164 to 133 ms at ncells 96, SciFact's from 40 to 35 ms at 64
   (bench/kernel.py; SPAN 16 about the same). */
#define SPAN 8
#define BATCH 64

/* A token's sums raised by one table row (LANES int16 at ``row``). */
static inline void add_row(lane_shorts *sums, const int16_t *row)
{
    for (int p = 0; p < PIECES; p++) sums->part[p] += load_piece(row + p * (WIDEST / 2));
}

/* The sums of ``n`` tokens' residual bytes (``batch``: [n, width], n <= BATCH) over one block of LANES
   query tokens' table rows (below), SPAN bytes at a time; four tokens at a time so that their table reads overlap. */
static void batch_sums(const int16_t *block, const uint8_t *batch, int64_t n, int64_t width, lane_shorts sums[BATCH])
{
    memset(sums, 0, (size_t)n * sizeof *sums);
    for (int64_t from = 0; from < width; from += SPAN) {
        const int64_t to = from + SPAN < width ? from + SPAN : width;
        int64_t j = 0;
        for (; j + 3 < n; j += 4) {
            const uint8_t *x = batch + j * width, *y = x + width, *z = y + width, *w = z + width;
            lane_shorts a = sums[j], c = sums[j + 1], e = sums[j + 2], f = sums[j + 3];
            const int16_t *rows = block + from * 256 * LANES;
            for (int64_t b = from; b < to; b++, rows += 256 * LANES) {
                add_row(&a, rows + x[b] * LANES);
                add_row(&c, rows + y[b] * LANES);
                add_row(&e, rows + z[b] * LANES);
                add_row(&f, rows + w[b] * LANES);
            }
            sums[j] = a, sums[j + 1] = c, sums[j + 2] = e, sums[j + 3] = f;
        }
        for (; j < n; j++) {
            const uint8_t *x = batch + j * width;
            lane_shorts a = sums[j];
            const int16_t *rows = block + from * 256 * LANES;
            for (int64_t b = from; b < to; b++, rows += 256 * LANES) add_row(&a, rows + x[b] * LANES);
            sums[j] = a;
        }
    }
}

/* table [q / LANES][width * 256][LANES] int16, a block of rows per LANES query tokens: row (b * 256 + v)
   of a block is what value v of residual byte b adds to each of its query tokens' similarity, in units
   of scale [q] and small enough that width of them add up without overflow. Rows a fixed LANES apart
   make a lookup a shift and an add (a multiply by q took a fifth of the loop's time: SciFact's probe
   31.1 -> 25.5 ms on one core, ad hoc). cell_scores [ncells, q]: each probed centroid's score for each
   query token; best [numbered, q], this part's: -inf where no token has been scored yet, raised in place.
   q % LANES == 0. The parts share the cells through ``shared`` (above). */
void colpg_score(const int16_t *table, const float *scale, const float *cell_scores, int64_t q, int64_t width,
                 const int64_t *offsets, const uint8_t *residuals, const int32_t *owners,
                 const int64_t *cells, int64_t ncells, const int32_t *local_of, float *best,
                 int64_t *shared, int64_t part, int64_t parts)
{
    lane_shorts sums[BATCH];
    if (!part_begins(shared, part)) return;
    for (int64_t i = claim(shared); i < ncells; i = claim(shared)) {
        const int64_t cell = cells[i], end = offsets[cell + 1];
        for (int64_t lane = 0; lane < q; lane += LANES) {
            const float *base = cell_scores + i * q + lane, *units = scale + lane;
            const int16_t *block = table + lane * width * 256;
            for (int64_t first = offsets[cell]; first < end; first += BATCH) {
                const int64_t n = end - first < BATCH ? end - first : BATCH;
                float *rows[BATCH];
                for (int64_t j = 0; j < n; j++) {  /* the rows keep_best raises, brought near while the sums are made */
                    rows[j] = best + (int64_t)local_of[owners[first + j]] * q + lane;
                    __builtin_prefetch(rows[j], 1), __builtin_prefetch(rows[j] + 16, 1);
                }
                batch_sums(block, residuals + first * width, n, width, sums);
                for (int64_t j = 0; j < n; j++) keep_best(rows[j], base, units, &sums[j]);
            }
        }
    }
    part_ends(shared, part, parts);
}

/* The probe's reduction per document (colpg.probe.floored_sum, fused): for each of ``rows`` documents, per
   query token the best of the ``nbests`` rows given for it (bests[b]: a part's maxima [rows, columns]), and
   the sum over query tokens of that best, or where it is below floor[j], floor[j] - discount; imputed[r]: how
   many query tokens were floored. floor [columns] is -inf on the padding columns, which add 0 (every numbered
   document has a token scored, so its padding columns hold 0). One pass over the maxima, where PyTorch merged
   them, compared, selected and summed in four passes and a temporary as large: 2.3 ms against 8.6 at the
   assembled 100k's 93,000 documents (ad hoc, session 29). On one thread: a second ran it 0.2 ms faster. */
void colpg_floored(const float *const *bests, int64_t nbests, int64_t rows, int64_t columns, const float *floor,
                   float discount, float *scores, int32_t *imputed)
{
    for (int64_t r = 0; r < rows; r++) {
        vec sum = {0};
        mask floored = {0};
        for (int64_t j = 0; j < columns; j += 8) {
            vec best = load(bests[0] + r * columns + j);
            for (int64_t b = 1; b < nbests; b++) best = larger(best, load(bests[b] + r * columns + j));
            const vec least = load(floor + j);
            const mask kept = best >= least;
            sum += (vec)(((mask)best & kept) | ((mask)(least - discount) & ~kept));
            floored -= ~kept;  /* ~kept is -1 in each lane floored */
        }
        scores[r] = lane_sum(sum);
        int32_t count = 0;
        for (int i = 0; i < 8; i++) count += floored[i];
        imputed[r] = count;
    }
}

/* The centroids whose ranges of a cluster-major layout hold ``n`` positions: for each, the last c with
   offsets[c] <= position (offsets [count + 1], from 0 up to the layout's tokens; empty ranges repeat an
   offset). Branch-free, all positions a halving at a time, so that their loads overlap: one search after
   another waited on each load in turn. */
static void codes_at(const int64_t *offsets, int64_t count, const int64_t *positions, int64_t n, int64_t *codes)
{
    for (int64_t j = 0; j < n; j++) codes[j] = 0;  /* offsets[codes[j]] <= positions[j] < offsets[codes[j] + size] */
    for (int64_t size = count; size > 1;) {
        const int64_t half = size / 2;
        for (int64_t j = 0; j < n; j++) codes[j] += (offsets[codes[j] + half] <= positions[j]) ? half : 0;
        size -= half;
    }
}

/* Whole documents (colpg.residual_stage), read where a cluster-major layout (colpg.layout) keeps them: document
   d is local[d] (its slot less the layout's first owner), its tokens the positions by_owner[owner_offsets[local[d]]
   .. owner_offsets[local[d] + 1] - 1] of residuals [n, width], each under the centroid whose range of offsets
   [count + 1] holds it. bases [count, q]: each centroid's score for each query token; best [ndocs, q], -inf to
   begin with, gets each document's best similarity per query token. table and scale as colpg_score's. A batch's
   residual rows are asked for at once, copied side by side and their centroids found here, where PyTorch's gathers
   of positions, residuals and centroid scores took 3.2 of a step's 7.7 ms at the assembled 100k (ad hoc, session
   30). The parts share the documents through ``shared``. */
void colpg_score_documents(const int16_t *table, const float *scale, const float *bases, int64_t q, int64_t width,
                           const int64_t *offsets, int64_t count, const uint8_t *residuals, const int32_t *by_owner,
                           const int64_t *owner_offsets, const int64_t *local, int64_t ndocs, float *best,
                           int64_t *shared, int64_t part, int64_t parts)
{
    lane_shorts sums[BATCH];
    uint8_t batch[BATCH * width];
    int64_t positions[BATCH], codes[BATCH];
    if (!part_begins(shared, part)) return;
    for (int64_t d = claim(shared); d < ndocs; d = claim(shared)) {
        const int64_t end = owner_offsets[local[d] + 1];
        for (int64_t first = owner_offsets[local[d]]; first < end; first += BATCH) {
            const int64_t n = end - first < BATCH ? end - first : BATCH;
            for (int64_t j = 0; j < n; j++) {  /* the rows asked for at once, and found while they come */
                positions[j] = by_owner[first + j];
                const uint8_t *row = residuals + positions[j] * width;
                __builtin_prefetch(row), __builtin_prefetch(row + width - 1);
            }
            codes_at(offsets, count, positions, n, codes);
            for (int64_t j = 0; j < n; j++) {
                memcpy(batch + j * width, residuals + positions[j] * width, (size_t)width);
                __builtin_prefetch(bases + codes[j] * q), __builtin_prefetch(bases + codes[j] * q + q - 1);
            }
            for (int64_t lane = 0; lane < q; lane += LANES) {
                batch_sums(table + lane * width * 256, batch, n, width, sums);
                for (int64_t j = 0; j < n; j++) keep_best(best + d * q + lane, bases + codes[j] * q + lane, scale + lane, &sums[j]);
            }
        }
    }
    part_ends(shared, part, parts);
}

/* The int8 rerank store (colpg.int8_kernel): its rows read, and scored in float or (AVX2, below) in
   integers, on CPUs whose int8 products do not pay in PyTorch; what colpg.stores.Int8Store computes there. */

typedef int8_t bytes16 __attribute__((vector_size(16)));

/* Sixteen int8 values as two vectors of eight floats (widened to int16 first: compilers turn that into
   sign extensions, where eight int8 straight to int32 came out one value at a time). */
static inline void int8_floats(const int8_t *p, vec *low, vec *high)
{
    bytes16 b;
    memcpy(&b, p, sizeof b);
    shorts wide = __builtin_convertvector(b, shorts);
    *low = to_float(wide, 0);
    *high = to_float(wide, 1);
}

/* Each row's raw form (colpg.stores.Int8Store): its int8 values [ntokens, dim] copied from payloads[r],
   each token followed by its inverse norm (float32) at the dimensions' scales [dim]. dim % 16 == 0. */
void colpg_int8_raws(const int8_t *const *payloads, const int64_t *ntokens, int64_t nrows, int64_t dim,
                     const float *scale, uint8_t *const *raws)
{
    const float tiny = 1e-12f;
    for (int64_t r = 0; r < nrows; r++) {
        const int8_t *in = payloads[r];
        uint8_t *out = raws[r];
        for (int64_t t = 0; t < ntokens[r]; t++, in += dim, out += dim + 4) {
            vec sq = {0};
            for (int64_t d = 0; d < dim; d += 16) {
                vec low, high;
                int8_floats(in + d, &low, &high);
                low *= load(scale + d), high *= load(scale + d + 8);
                sq += low * low + high * high;
            }
            float norm = __builtin_sqrtf(lane_sum(sq));
            float inverse = 1.0f / (norm > tiny ? norm : tiny);
            memcpy(out, in, (size_t)dim);
            memcpy(out + dim, &inverse, sizeof inverse);
        }
    }
}

/* Tokens scored at once: RERANK_T tokens' similarities with 16 query tokens stay in 2 * RERANK_T
   registers over all dimensions, each query value loaded once for RERANK_T tokens. */
#define RERANK_T 6
#define RERANK_LANES 16
const int64_t colpg_int8_block = RERANK_T, colpg_int8_lanes = RERANK_LANES;

static inline vec splat(float x) { return (vec){x, x, x, x, x, x, x, x}; }

/* MaxSim of each document from its raw int8 rows: scores[r] = sum over the first q query tokens of the best
   over the row's tokens of (values . query) * inverse norm. rows[r]: [ntokens[r], dim + 4] as colpg_int8_raws
   writes them; query [dim, qp] float32 (qp % RERANK_LANES == 0, lanes past q ignored), already multiplied by the
   dimensions' scales; work: RERANK_T * dim + qp floats, this part's. A row of no tokens scores -inf. The
   parts share the rows through ``shared`` (above). */
void colpg_int8_maxsim(const uint8_t *const *rows, const int64_t *ntokens, int64_t nrows, int64_t dim,
                       const float *query, int64_t q, int64_t qp, float *work, float *scores,
                       int64_t *shared, int64_t part, int64_t parts)
{
    const int64_t stride = dim + 4;
    float *best = work + RERANK_T * dim;
    if (!part_begins(shared, part)) return;
    for (int64_t r = claim(shared); r < nrows; r = claim(shared)) {
        const int64_t count = ntokens[r];
        for (int64_t j = 0; j < qp; j++) best[j] = -__builtin_inff();
        for (int64_t t = 0; t < count; t += RERANK_T) {
            const int64_t n = count - t < RERANK_T ? count - t : RERANK_T;
            float inverse[RERANK_T];
            for (int64_t j = 0; j < RERANK_T; j++) {  /* a short block repeats its last token */
                const uint8_t *token = rows[r] + (t + (j < n ? j : n - 1)) * stride;
                for (int64_t d = 0; d < dim; d += 16) {
                    vec low, high;
                    int8_floats((const int8_t *)token + d, &low, &high);
                    store(work + j * dim + d, low), store(work + j * dim + d + 8, high);
                }
                memcpy(&inverse[j], token + dim, sizeof(float));
            }
            for (int64_t lane = 0; lane < qp; lane += RERANK_LANES) {
                vec acc[RERANK_T][2];
                for (int j = 0; j < RERANK_T; j++) acc[j][0] = acc[j][1] = (vec){0};
                const float *qd = query + lane;
                for (int64_t d = 0; d < dim; d++, qd += qp) {
                    const vec lo = load(qd), hi = load(qd + 8);
                    for (int j = 0; j < RERANK_T; j++) {
                        const vec x = splat(work[j * dim + d]);
                        acc[j][0] += x * lo;
                        acc[j][1] += x * hi;
                    }
                }
                vec top0 = load(best + lane), top1 = load(best + lane + 8);
                for (int j = 0; j < RERANK_T; j++) {
                    top0 = larger(top0, acc[j][0] * inverse[j]);
                    top1 = larger(top1, acc[j][1] * inverse[j]);
                }
                store(best + lane, top0);
                store(best + lane + 8, top1);
            }
        }
        float score = 0.0f;
        for (int64_t j = 0; j < q; j++) score += best[j];
        scores[r] = score;
    }
    part_ends(shared, part, parts);
}

/* The same MaxSim in integer arithmetic, where AVX2 has it (colpg_int8_integer is 1; 0 elsewhere, and
   colpg.int8_kernel scores in float). The query comes as int16 [qp, dim], token-major (qp % 4 == 0, padded
   tokens zero): colpg.scoring.Int8Query's two int8 parts as one, 254 * high + low, with step [qp] its scale
   over 254, so the sums are Int8Query.products' exactly. Each 16-bit row value times 16-bit query value goes
   through one multiply-add of pairs into int32; four query tokens and two row tokens at a time, 16
   dimensions a step (dim % 16 == 0). The int32 sums are turned into floats every INTEGER_SPAN dimensions:
   a pair is at most 2 * 128 * 32,385, so 384 dimensions stay below 2^31. best: qp floats of this part's
   work. The parts share the rows through ``shared`` (above). */
#if defined(__AVX2__)
#include <immintrin.h>
#define INTEGER_SPAN 384
const int64_t colpg_int8_integer = 1;

static inline __m256i multiply_add(__m256i sums, __m256i values, __m256i query)
{
    return _mm256_add_epi32(sums, _mm256_madd_epi16(values, query));
}

/* The totals of four accumulators of eight int32 sums, as floats. */
static inline __m128 totals(__m256i a, __m256i b, __m256i c, __m256i d)
{
    const __m256i all = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_cvtepi32_ps(_mm_add_epi32(_mm256_castsi256_si128(all), _mm256_extracti128_si256(all, 1)));
}

static inline __m256i widened(const uint8_t *values) { return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)values)); }

#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
/* With AVX-512 VNNI, 32 dimensions a step in one fused multiply-add of pairs (vpdpwssd): the same int32
   sums, so the same scores to the bit, in fewer instructions (colpg_int8_wide is 1; 0 elsewhere). */
#define WIDE_STEP 32
const int64_t colpg_int8_wide = 1;
static inline __m512i widened32(const uint8_t *values) { return _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)values)); }
static inline __m256i folded(__m512i sums) { return _mm256_add_epi32(_mm512_castsi512_si256(sums), _mm512_extracti64x4_epi64(sums, 1)); }
#else
const int64_t colpg_int8_wide = 0;
#endif

void colpg_int8_integer_maxsim(const uint8_t *const *rows, const int64_t *ntokens, int64_t nrows, int64_t dim,
                               const int16_t *query, const float *step, int64_t q, int64_t qp, float *best, float *scores,
                               int64_t *shared, int64_t part, int64_t parts)
{
    const int64_t stride = dim + 4;
    if (!part_begins(shared, part)) return;
    for (int64_t r = claim(shared); r < nrows; r = claim(shared)) {
        const int64_t count = ntokens[r];
        for (int64_t j = 0; j < qp; j++) best[j] = -__builtin_inff();
        for (int64_t t = 0; t < count; t += 2) {  /* an odd row repeats its last token */
            const uint8_t *first = rows[r] + t * stride, *second = rows[r] + (t + 1 < count ? t + 1 : t) * stride;
            float inverse[2];
            memcpy(&inverse[0], first + dim, sizeof(float));
            memcpy(&inverse[1], second + dim, sizeof(float));
            for (int64_t j = 0; j < qp; j += 4) {
                const int16_t *tokens = query + j * dim;
                __m128 x = _mm_setzero_ps(), y = x;
                for (int64_t span = 0; span < dim; span += INTEGER_SPAN) {
                    const int64_t end = span + INTEGER_SPAN < dim ? span + INTEGER_SPAN : dim;
                    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
                    int64_t d = span;
#if defined(WIDE_STEP)
                    __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, e0 = c0, e1 = c0, e2 = c0, e3 = c0;
                    for (; d + WIDE_STEP <= end; d += WIDE_STEP) {
                        const __m512i u = widened32(first + d), w = widened32(second + d);
                        __m512i v = _mm512_loadu_si512((const void *)(tokens + d));
                        c0 = _mm512_dpwssd_epi32(c0, u, v), e0 = _mm512_dpwssd_epi32(e0, w, v);
                        v = _mm512_loadu_si512((const void *)(tokens + dim + d));
                        c1 = _mm512_dpwssd_epi32(c1, u, v), e1 = _mm512_dpwssd_epi32(e1, w, v);
                        v = _mm512_loadu_si512((const void *)(tokens + 2 * dim + d));
                        c2 = _mm512_dpwssd_epi32(c2, u, v), e2 = _mm512_dpwssd_epi32(e2, w, v);
                        v = _mm512_loadu_si512((const void *)(tokens + 3 * dim + d));
                        c3 = _mm512_dpwssd_epi32(c3, u, v), e3 = _mm512_dpwssd_epi32(e3, w, v);
                    }
                    a0 = folded(c0), a1 = folded(c1), a2 = folded(c2), a3 = folded(c3);
                    b0 = folded(e0), b1 = folded(e1), b2 = folded(e2), b3 = folded(e3);
#endif
                    for (; d < end; d += 16) {  /* every step without AVX-512 VNNI, a last 16 dimensions with it */
                        const __m256i u = widened(first + d), w = widened(second + d);
                        __m256i v = _mm256_loadu_si256((const __m256i *)(tokens + d));
                        a0 = multiply_add(a0, u, v), b0 = multiply_add(b0, w, v);
                        v = _mm256_loadu_si256((const __m256i *)(tokens + dim + d));
                        a1 = multiply_add(a1, u, v), b1 = multiply_add(b1, w, v);
                        v = _mm256_loadu_si256((const __m256i *)(tokens + 2 * dim + d));
                        a2 = multiply_add(a2, u, v), b2 = multiply_add(b2, w, v);
                        v = _mm256_loadu_si256((const __m256i *)(tokens + 3 * dim + d));
                        a3 = multiply_add(a3, u, v), b3 = multiply_add(b3, w, v);
                    }
                    x = _mm_add_ps(x, totals(a0, a1, a2, a3));
                    y = _mm_add_ps(y, totals(b0, b1, b2, b3));
                }
                const __m128 scale = _mm_loadu_ps(step + j);
                __m128 top = _mm_loadu_ps(best + j);
                top = _mm_max_ps(top, _mm_mul_ps(_mm_mul_ps(x, scale), _mm_set1_ps(inverse[0])));
                top = _mm_max_ps(top, _mm_mul_ps(_mm_mul_ps(y, scale), _mm_set1_ps(inverse[1])));
                _mm_storeu_ps(best + j, top);
            }
        }
        float score = 0.0f;
        for (int64_t j = 0; j < q; j++) score += best[j];
        scores[r] = score;
    }
    part_ends(shared, part, parts);
}
#else
const int64_t colpg_int8_integer = 0;
const int64_t colpg_int8_wide = 0;
#endif
