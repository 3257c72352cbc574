/* A hand probe of fresh large CPU blocks on this VM (bench/NOTES.md, "the bank's forward-only phase").

   Allocates a block of the prompt bank's output size (308,281,344 bytes = 8 x 64 x 3 x 224 x 224 float32)
   as csrc/runtime/cpu_block_cache.cpp allocates a fresh block (posix_memalign to 2 MiB, optionally
   MADV_HUGEPAGE and MADV_POPULATE_WRITE), writes every byte, frees it, and prints the milliseconds of
   each of 5 rounds. A pause before each round lets the guest report the freed memory to the host (free
   page reporting, `page_reporting.page_reporting_order` on the kernel command line).

       cc -O2 -o /tmp/hugepage_refault_probe bench/notes/hugepage_refault_probe.c
       /tmp/hugepage_refault_probe HUGE POPULATE PAUSE_S      (e.g. 1 1 4: as our allocator, 4 s apart)
*/
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s HUGE(0|1) POPULATE(0|1) PAUSE_SECONDS\n", argv[0]);
    return 2;
  }
  const size_t len = (size_t)308281344;
  const int huge = atoi(argv[1]), populate = atoi(argv[2]);
  const double pause_s = atof(argv[3]);
  for (int round = 0; round < 5; ++round) {
    usleep((useconds_t)(pause_s * 1e6));
    const double begin = now_ms();
    void* p = NULL;
    if (posix_memalign(&p, (size_t)2 << 20, len) != 0) return 1;
    if (huge) madvise(p, len, MADV_HUGEPAGE);
#ifdef MADV_POPULATE_WRITE
    if (populate) madvise(p, len, MADV_POPULATE_WRITE);
#endif
    memset(p, 1, len);
    printf("%.0f ", now_ms() - begin);
    fflush(stdout);
    free(p);
  }
  printf(" ms  (huge %d, populate %d, pause %.1f s)\n", huge, populate, pause_s);
  return 0;
}
