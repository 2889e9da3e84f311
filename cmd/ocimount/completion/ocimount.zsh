#compdef ocimount
# zsh completion for ocimount: source <(ocimount completion zsh), after
# compinit (or save it as _ocimount in a directory of $fpath).
#
# The candidates come from ocimount itself: urfave/cli answers a command
# line that ends in --generate-bash-completion with the subcommands (or,
# after a word starting with "-", the flags) that fit there. Where it has
# none, and for the first argument (`ocimount SOURCE MOUNTPOINT` is short
# for mount), file names are offered.
_ocimount() {
	local cur=${words[CURRENT]}
	local -a ask opts
	ask=("${(@Q)words[1,CURRENT-1]}")
	# After "--" urfave/cli would not complete but run the command, with
	# --generate-bash-completion as an argument.
	if (( ${ask[(Ie)--]} )); then
		_files
		return
	fi
	case $cur in
	--) ask+=(-) ;; # "--" itself must not be sent; "-" asks for every flag
	-*) ask+=("$cur") ;;
	esac
	opts=("${(@f)$("${ask[@]}" --generate-bash-completion 2>/dev/null)}")
	opts=(${opts:#})
	local ret=1
	if (( ${#opts} )); then
		compadd -a opts && ret=0
	fi
	if (( ! ${#opts} || CURRENT == 2 )) && [[ $cur != -* ]]; then
		_files && ret=0
	fi
	return ret
}
if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
	_ocimount "$@"
else
	compdef _ocimount ocimount
fi
