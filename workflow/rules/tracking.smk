# MLflow parent run: one per invocation that runs jobs; each job opens a child run under it.
# Hooks, not a rule: `onstart` runs only when jobs are about to run, so `snakemake -n` stays
# empty and every invocation gets its own parent. A rule would need an output file, which
# would either schedule work on every rerun or tie later invocations to an old parent.


onstart:
    check_results_writable()
    remove_partial_files()
    start_parent_run()


onsuccess:
    finish_parent_run("FINISHED")


onerror:
    finish_parent_run("FAILED")
