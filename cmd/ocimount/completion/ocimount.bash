# bash completion for ocimount: source <(ocimount completion bash)
#
# The candidates come from ocimount itself: urfave/cli answers a command
# line that ends in --generate-bash-completion with the subcommands (or,
# after a word starting with "-", the flags) that fit there. Where it has
# none, bash completes file names (-o default): SOURCE and MOUNTPOINT are
# paths more often than not.
_ocimount() {
	# The words are taken from the line, not from COMP_WORDS, which bash
	# also splits at ':' and '=' (oci:DIR, --platform=...).
	local -a words
	read -ra words <<<"${COMP_LINE:0:COMP_POINT}"
	local cur=
	if [[ ${COMP_LINE:COMP_POINT-1:1} != [[:space:]] ]]; then
		cur=${words[-1]}
		unset 'words[-1]'
	fi
	local w
	for w in "${words[@]}"; do
		# After "--" urfave/cli would not complete but run the command,
		# with --generate-bash-completion as an argument.
		[[ $w == -- ]] && return 0
	done
	case $cur in
	--) words+=(-) ;; # "--" itself must not be sent; "-" asks for every flag
	-*) words+=("$cur") ;;
	esac
	local IFS=$'\n'
	local opts
	opts=$("${words[@]}" --generate-bash-completion 2>/dev/null) || opts=
	COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -o bashdefault -o default -F _ocimount ocimount
