/*
 * errors.c -- farm's error codes in words, and its version.
 *
 * Threads: any (constant strings).
 */
#include "farm.h"

const char *farm_version(void) { return FARM_VERSION; }

const char *farm_strerror(int code) {
  switch (code) {
  case FARM_OK: return "success";
  case FARM_ENOMEM: return "out of memory";
  case FARM_EINVAL: return "invalid argument";
  case FARM_EPROTO: return "malformed or unexpected message";
  case FARM_EVERSION: return "the peer speaks another protocol version";
  case FARM_ETOOBIG: return "a message or value exceeds a limit";
  case FARM_ELINK: return "a link failed";
  case FARM_ESPAWN: return "a worker process could not be started";
  case FARM_ECLOSED: return "the farm was closed";
  case FARM_ETIMEDOUT: return "timed out";
  case FARM_EAUTH: return "authentication failed";
  case FARM_ESSH: return "an SSH connection failed";
  case FARM_EHOSTS: return "a hostfile or host list does not parse";
  default: return "unknown error";
  }
}
