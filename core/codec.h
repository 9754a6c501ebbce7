/*
 * codec.h -- the one binary codec for Lua values on the wire.
 *
 * A *block* is what travels for a job's function, its arguments or its results:
 *
 *     block   := uvar(n) value*n globals
 *     globals := (str(name) value)* str("")        -- ends with an empty name
 *     value   := NIL | FALSE | TRUE
 *              | INT svar | FLT u64le(bits) | SMALLINT (tag 0x80+v, v in 0..127)
 *              | STR str
 *              | TABLE uvar(narr) uvar(nhash) value*narr (value value)*nhash
 *              | TABLEMT ...as TABLE... value(metatable)
 *              | REF uvar(index)            -- a table or function seen before
 *              | FUNC str(chunk) uvar(line) str(text) uvar(nup) (str(name) value)*nup
 *              | MODREF str(qualified name) -- package.loaded value, e.g. "math.sqrt"
 *              | MODULE str(qualified name) value(info)
 *                                           -- a MODREF that says how to load its module
 *              | GLOBALS                    -- the sender's global table
 *              | CLASS str(name) (NIL | TABLE... | TABLEMT...)
 *                                           -- only as a TABLEMT's metatable: a class
 *              | UPREF uvar(index) str(name) -- only as a FUNC's upvalue value: that
 *                                           upvalue of the function numbered index
 *
 * Tables and functions are numbered in the order they are first met (a FUNC or
 * TABLE gets its number before its contents are read; REF indices count from
 * 1), so cycles and shared references come back as they were. FUNC text
 * compiles, in text mode, to a chunk that returns the function; the chunk is
 * compiled as if it began on `line` of `chunk`, so tracebacks name the
 * sender's file and line. Upvalues are restored by name, never by position.
 * A function's global names (from the describe hook) are gathered into the
 * block's globals section. A name "lib.key" there, lib one of the standard
 * libraries (string, table, math, os, io, utf8, coroutine, debug, package), is
 * a field the sender's script added to that library (`function string.trim`):
 * the encoder reads it from the library, the decoder hands it to its install
 * hook (or drops it), never to the environment.
 *
 * MODULE is the first reference in a block to a module whose loading the
 * worker may need help with: info is a table {module = "mod.name", path =,
 * cpath = (the sender's package paths), file =, text = (the module's Lua
 * source) or preload = (its package.preload function)}, from the names table's
 * __module metamethod; the decoder calls resolve(qualified name, info).
 *
 * CLASS is a metatable the sender can name: a global or a field of a global
 * ("Dog", "animals.Cat"; a metatable found in package.loaded travels as
 * MODREF). It takes the metatable's number. Followed by NIL, the receiver has
 * a table of that name and uses it (its global table, then the block's
 * environment, then the classes it was sent before); a name it does not have
 * is an error naming the class. Followed by the table itself, the receiver
 * uses that copy (a client sends its classes so: a worker has none of its
 * own). Decoders that record (a worker's) remember the name of each class and
 * of each table that arrives as a global or a global's field, so that a
 * worker's results name them again (farm_encoder.home) and the client gets its
 * own class back: class identity holds both ways.
 *
 * UPREF makes an upvalue the very variable an upvalue of an earlier function
 * is (lua_upvaluejoin): closures that shared an upvalue when they were encoded
 * (lua_upvalueid) share it when decoded. Upvalues holding the global table
 * (GLOBALS) are not joined: every function of a block gets the same
 * environment anyway.
 *
 * Blocks may continue one another: a job's argument block continues its
 * function block when that travels with each job (FN_FRESH). Its REF indices
 * count on from the function block's (encoder: prior/nprior from the function
 * block's keep; decoder: chain), and both decode into one environment, so a
 * table that is an upvalue of the job function and an argument is one table,
 * and an argument closure shares the upvalues it shares with the job.
 *
 * Every decoder checks every length and count against the bytes left before it
 * trusts it, and limits nesting depth: malformed input raises a Lua error
 * ("malformed message: ..."), never crashes and never hangs. What one message
 * can cost is bounded by its length: the slots preallocated for all its tables
 * together, and the lines its functions start after (a function may start on
 * line 1,000,000 at most; all those compiled, 64 lines per message byte plus
 * 1,000,000 in all).
 *
 * Decoding what another host sent (farm_decoder.untrusted: a node's results)
 * runs nothing that host wrote, and what it decodes reaches nothing of ours
 * that we did not name:
 *   - A FUNC's text is compiled and its main function read (lua_dump) before
 *     it is called to make the function: it may only declare locals (nil, or
 *     a nil <close>) and make closures, `local a, b <const>; return function
 *     ... end`, which has no jumps and so ends. Anything else is refused
 *     unrun ("a function from another host runs code while it is made"), a
 *     main chunk (sent as `return load(...)`) included.
 *   - A TABLEMT's metatable must be ours, named: CLASS name NIL (a class we
 *     have), MODREF or MODULE (resolved by d->resolve among what we loaded), or
 *     a REF to a class named so before in the block. A metatable by value
 *     (TABLE, CLASS with a copy, GLOBALS, a REF to a table of the message) is
 *     refused: its __gc, __index or __close would be the sender's code, run by
 *     us later.
 *   - Without d->env, the block's environment (what GLOBALS decodes to, where
 *     the globals section goes, and every function's _ENV) is a sandbox: a new
 *     table with copies of the pure standard library (string, table, math,
 *     utf8, coroutine and base functions such as pairs, type, tostring,
 *     pcall), and no load, require, dofile, io, os, debug, package,
 *     getmetatable, setmetatable or collectgarbage; no __index to our globals.
 *   - Cost: compiles and the rest are bounded by the message's length as above;
 *     a FUNC's text is only compiled, and compiling is linear in the text.
 * Not covered here: which names d->resolve gives values for (MODREF lets the
 * sender name any value we have loaded, and a function of its may hold it as
 * an upvalue), and a string's methods (our string metatable).
 */
#ifndef FARM_CODEC_H
#define FARM_CODEC_H

#include <lua.h>
#include "buf.h"

enum {
  FARM_T_NIL = 0, FARM_T_FALSE, FARM_T_TRUE, FARM_T_INT, FARM_T_FLT, FARM_T_STR,
  FARM_T_TABLE, FARM_T_TABLEMT, FARM_T_REF, FARM_T_FUNC, FARM_T_MODREF,
  FARM_T_GLOBALS, FARM_T_MODULE, FARM_T_CLASS, FARM_T_UPREF,
  FARM_T_SMALLINT = 0x80
};

#define FARM_CODEC_MAXDEPTH 200

typedef struct farm_encoder {
  /* Absolute Lua stack indices, or 0 when absent. */
  int names;     /* table: value -> qualified name; such values travel as MODREF.
                    Its metatable's __module(qualified name) -> nil or info, if
                    there is one, turns a block's first MODREF to a module into
                    MODULE (see above) */
  int describe;  /* function(f) -> {chunk=, line=, text=, name=, where=, globals={...}};
                    called for every Lua function not found in names; may raise */
  int globals;   /* the table that travels as GLOBALS (checked before names, so
                    it does so even when names has it, as "_G"), and where global
                    names are looked up (rawget) for the globals section */
  const char *root;  /* what the values are, for messages: "argument", "result" */
  /* Class names: a metatable not in names travels as CLASS when it has one:
     from the names table's metatable's __class(metatable, block) -> name or
     nil (block: a table, the same for every question about one block)
     (lua/ship.lua: the sender's globals and their fields; not asked when home
     is set), else from the names this state recorded as it decoded; with its
     value, or without it when home is set. */
  int home;      /* 1: the receiver is where this state's recorded names came
                    from (a worker's results go back to its client) */
  int keep;      /* table (empty) to number this block's tables and functions in,
                    value -> number; left filled for a block that continues this one */
  int prior;     /* the keep table of the block this one continues, or 0 ... */
  lua_Integer nprior;  /* ...and how many values it numbered (what encode returned) */
} farm_encoder;

typedef struct farm_decoder {
  int env;       /* table that GLOBALS decodes to and that functions get as _ENV;
                    0: a new table with __index = the global table, made when first
                    needed (untrusted: a sandbox, see above) */
  int resolve;   /* function(name) -> value, for MODREF; 0: MODREF is an error */
  int cache;     /* table caching compiled chunks by chunk/line/text; 0: no cache */
  int remember;  /* function(chunk, text) told of each text compiled (padded to its
                    line), so functions made here can be shipped on; 0: none */
  int install;   /* function("lib.key", value) for the library fields of the
                    globals section (a worker's: lua/ship.lua install); 0: they
                    are dropped. resolve is called as resolve(name, info) for MODULE */
  int chain;     /* table carrying one block's numbering and environment on to the
                    next (a job's function block to its argument block): give the
                    same (at first empty) table to both; 0: none */
  int record;    /* 1: remember the names of the classes and globals that arrive
                    (a worker's decoders; see CLASS) */
  int untrusted; /* 1: from another host (a node's results): decoding runs nothing
                    the message wrote, its metatables are only classes we name, and
                    its functions get a sandbox of their own, not our globals (see
                    above). Its references to metatables reach back only within the
                    block, not through chain */
} farm_decoder;

/* Append the block of the n values at L[first..] to b. Raises a Lua error
   naming the path to anything that cannot travel:
     cannot ship argument 2.conn (userdata)
     cannot ship upvalue 'conn' (userdata) of function 'work' (job.lua:12)
     cannot ship global 'db' (userdata) used by function 'work' (job.lua:12)
   b must be owned by something that outlives a Lua error (it is not freed here).
   Returns how many tables and functions are numbered, prior ones included. */
lua_Integer farm__codec_encode(lua_State *L, farm_buf *b, int first, int n,
                              const farm_encoder *e);

/* Decode one block from p[0..len): pushes its values and returns how many.
   Raises "malformed message: <reason>" on bad input. Trailing bytes are an error. */
int farm__codec_decode(lua_State *L, const void *p, size_t len,
                      const farm_decoder *d);

#endif
