"""Named process exit codes (sysexits.h), used at every process boundary.

| code | name     | when                                                                  |
|------|----------|-----------------------------------------------------------------------|
| 0    | OK       | done; also: message passed through untouched (not opted in, too big,  |
|      |          | internal error with ``on_error = "pass"``)                            |
| 64   | USAGE    | bad command line                                                      |
| 65   | DATAERR  | bad input: no/unknown/foreign signature, invalid user name, no message|
| 66   | NOINPUT  | a training source cannot be read (missing, no permission)             |
| 70   | SOFTWARE | a bug: an unexpected internal error outside the inline filter path    |
| 74   | IOERR    | an administrator's command cannot write its standard output (closed,  |
|      |          | a full disk)                                                          |
| 75   | TEMPFAIL | storage unavailable, or any internal error with ``on_error = "tempfail"``|
| 77   | NOPERM   | an untrusted OS user tried to act for another user                    |
| 78   | CONFIG   | the configuration file is unreadable or invalid                       |
"""

OK = 0
USAGE = 64
DATAERR = 65
NOINPUT = 66
SOFTWARE = 70
IOERR = 74
TEMPFAIL = 75
NOPERM = 77
CONFIG = 78
