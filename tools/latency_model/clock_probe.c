/* clock_probe: the clock this x86 core runs at now, in GHz, for the latency model's x86
 * validation (the VM reports no frequency, and boost depends on load). It times a chain of
 * dependent register adds, one cycle each on every x86 core of the last decade, against the
 * thread's CPU time, and prints the best of 5 tries. */
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static double thread_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(void) {
  const long outer = 200000; /* x 1000 adds: 2e8 cycles, ~0.1 s */
  double best = 0;
  for (int t = 0; t < 5; ++t) {
    uint64_t x = 0;
    const double t0 = thread_seconds();
    for (long i = 0; i < outer; ++i) {
      __asm__ volatile(".rept 1000\n\taddq $1, %0\n\t.endr" : "+r"(x));
    }
    const double s = thread_seconds() - t0;
    const double ghz = (double)outer * 1000.0 / s / 1e9;
    if (ghz > best) best = ghz;
    if (x != (uint64_t)outer * 1000) return 1;
  }
  printf("%.3f\n", best);
  return 0;
}
