#!/bin/sh
# The demo: train user "demo" from a generated corpus, then filter one new spam and one new
# ham and show the headers spamsift added. Uses the embedded SQLite default in
# $SPAMSIFT_HOME (./demo-home unless set). Needs `spamsift` and `python3` on PATH.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
export SPAMSIFT_HOME="${SPAMSIFT_HOME:-$PWD/demo-home}"
rm -rf "$SPAMSIFT_HOME/corpus" "$SPAMSIFT_HOME/new"
python3 "$here/make_corpus.py" "$SPAMSIFT_HOME/corpus" 60 2026
python3 "$here/make_corpus.py" "$SPAMSIFT_HOME/new" 1 7

echo "== training user 'demo' in $SPAMSIFT_HOME (60 spam, 60 ham, one process each)"
for n in $(seq -w 0 59); do
    spamsift filter --user demo --class=spam --source=corpus < "$SPAMSIFT_HOME/corpus/spam/00$n.eml"
    spamsift filter --user demo --class=innocent --source=corpus < "$SPAMSIFT_HOME/corpus/ham/00$n.eml"
done

for label in spam ham; do
    echo
    echo "== a new $label message through 'spamsift filter --user demo --stdout --deliver=innocent,spam'"
    spamsift filter --user demo --stdout --deliver=innocent,spam < "$SPAMSIFT_HOME/new/$label/0000.eml" \
        | sed -n '/^$/q;p'
done
