/*
 * farm.h -- the public C interface of farm, a task farm whose jobs are Lua 5.4
 * functions.
 *
 * A C host embeds farm through a Lua state: luaopen_farm() gives it the same
 * `farm` module a script gets (submit, map, wait, ...). There is no global
 * state in the library: every pool hangs off the Lua state that opened it, so
 * one process may run several farms side by side.
 */
#ifndef FARM_H
#define FARM_H

#ifdef __cplusplus
extern "C" {
#endif

struct lua_State;

#define FARM_VERSION "0.1.0"
#define FARM_PROTOCOL 2          /* the wire protocol this build speaks */

/* Error codes: negative, with a message for each from farm_strerror(). */
#define FARM_OK        0
#define FARM_ENOMEM   (-1)       /* out of memory */
#define FARM_EINVAL   (-2)       /* bad argument */
#define FARM_EPROTO   (-3)       /* malformed or unexpected message */
#define FARM_EVERSION (-4)       /* peer speaks another protocol version */
#define FARM_ETOOBIG  (-5)       /* a message or value exceeds a limit */
#define FARM_ELINK    (-6)       /* a link failed (nanomsg error) */
#define FARM_ESPAWN   (-7)       /* a worker process could not be started */
#define FARM_ECLOSED  (-8)       /* the farm was closed */
#define FARM_ETIMEDOUT (-9)      /* a wait timed out */
#define FARM_EAUTH    (-10)      /* authentication failed (a wrong or missing key) */
#define FARM_ESSH     (-11)      /* a host could not be reached or logged into over SSH */
#define FARM_EHOSTS   (-12)      /* a hostfile or host list does not parse */

const char *farm_strerror(int code);
const char *farm_version(void);

/* Open the `farm` Lua module into L and leave it on the stack (as require does). */
int luaopen_farm(struct lua_State *L);

#ifdef __cplusplus
}
#endif
#endif
