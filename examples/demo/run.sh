#!/bin/sh
# The demo: estimate how well a new user's filter will work on a generated corpus
# (`spamsift evaluate`), bootstrap the user from it (`spamsift train`), then filter one new spam
# and one new ham and show the headers spamsift added. Uses the embedded SQLite default in
# $SPAMSIFT_HOME (./demo-home unless set). Needs `spamsift` and `python3` on PATH.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
export SPAMSIFT_HOME="${SPAMSIFT_HOME:-$PWD/demo-home}"
rm -rf "$SPAMSIFT_HOME/corpus" "$SPAMSIFT_HOME/new" "$SPAMSIFT_HOME/spamsift.db"*
python3 "$here/make_corpus.py" "$SPAMSIFT_HOME/corpus" 300 2026
python3 "$here/make_corpus.py" "$SPAMSIFT_HOME/new" 1 7

echo "== how accurate will user 'demo' be? (spamsift evaluate: nothing is stored)"
spamsift evaluate --user demo --quiet --folds 5 \
    --spam "$SPAMSIFT_HOME/corpus/spam" --ham "$SPAMSIFT_HOME/corpus/ham"

echo
echo "== bootstrapping user 'demo' in $SPAMSIFT_HOME from 300 spam and 300 ham (spamsift train)"
spamsift train --user demo --quiet --spam "$SPAMSIFT_HOME/corpus/spam" --ham "$SPAMSIFT_HOME/corpus/ham"

for label in spam ham; do
    echo
    echo "== a new $label message through 'spamsift filter --user demo --stdout --deliver=innocent,spam'"
    spamsift filter --user demo --stdout --deliver=innocent,spam < "$SPAMSIFT_HOME/new/$label/0000.eml" \
        | sed -n '/^$/q;p'
done
