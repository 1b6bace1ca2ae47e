/* Does this machine run AMX tile instructions? Some virtual machines advertise AMX in cpuid
 * (so -march=native turns llama.cpp's AMX kernels on) yet trap on the first tile instruction.
 * Exit 0 when a tile can be configured and zeroed; the kernel's SIGILL otherwise. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct tile_config {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} __attribute__((packed));

int main(void) {
  if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) != 0) return 1;
  struct tile_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette_id = 1;
  cfg.rows[0] = 16;
  cfg.colsb[0] = 64;
  _tile_loadconfig(&cfg);
  _tile_zero(0);
  _tile_release();
  return 0;
}
