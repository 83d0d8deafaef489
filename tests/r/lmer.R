# lme4 + lmerTest reference fits for tests/r_oracle.py: Rscript --vanilla lmer.R JOBS.json OUT.json
# JOBS.json: [{csv, formula, reml, controls [R expression or null, ..], classes {column: class}, levels {column: [..]}}]
# OUT.json: one object per job (the keys r_oracle.lmer documents, and control: the index of the control kept) or
# {"error": message}; numbers as %.17g.
suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
})

read_frame <- function(job) {
  frame <- utils::read.csv(job$csv, check.names = FALSE, colClasses = unlist(job$classes), na.strings = "NA")
  for (name in names(job$levels)) frame[[name]] <- factor(frame[[name]], levels = unlist(job$levels[[name]]))
  frame
}

# evaluate expr, collecting its warnings and messages into the environment `into` (field notes)
collecting <- function(expr, into) {
  withCallingHandlers(expr,
    warning = function(w) {
      into$notes <- c(into$notes, conditionMessage(w))
      invokeRestart("muffleWarning")
    },
    message = function(m) {
      into$notes <- c(into$notes, trimws(conditionMessage(m)))
      invokeRestart("muffleMessage")
    })
}

named <- function(values, names) as.list(stats::setNames(as.numeric(values), names))

coefficient_column <- function(coefs, column) {
  values <- if (column %in% colnames(coefs)) coefs[, column] else rep(NA_real_, nrow(coefs))
  named(values, rownames(coefs))
}

varcor_rows <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  lapply(seq_len(nrow(vc)), function(i) {
    list(grp = as.character(vc$grp[i]), var1 = as.character(vc$var1[i]), var2 = as.character(vc$var2[i]),
         vcov = vc$vcov[i], sdcor = vc$sdcor[i])
  })
}

# lme4::lmer with one control (an R expression, or NULL for lme4's default), its warnings and messages in notes
fit_with <- function(job, frame, control) {
  log <- new.env()
  log$notes <- character(0)
  settings <- if (is.null(control)) lmerControl() else eval(parse(text = control))
  m <- collecting(lme4::lmer(stats::as.formula(job$formula), data = frame, REML = job$reml, control = settings),
                  log)
  list(model = m, notes = log$notes)
}

# the fit with the highest log-likelihood over the job's controls (the first on ties), with lmerTest's tests
fit_job <- function(job) {
  frame <- read_frame(job)
  fits <- lapply(job$controls, function(control) fit_with(job, frame, control))
  k <- which.max(vapply(fits, function(f) as.numeric(logLik(f$model)), 0))
  log <- new.env()
  log$notes <- fits[[k]]$notes
  m <- collecting(lmerTest::as_lmerModLmerTest(fits[[k]]$model), log)
  coefs <- collecting(summary(m)$coefficients, log)  # lmerTest: Satterthwaite df and Pr(>|t|)
  optimizer <- c(m@optinfo$conv$lme4$messages, unlist(m@optinfo$warnings), log$notes)
  list(loglik = as.numeric(logLik(m)), deviance = if (isREML(m)) REMLcrit(m) else deviance(m),
       theta = as.list(unname(getME(m, "theta"))), sigma = sigma(m),
       fixef = named(fixef(m), names(fixef(m))), se = coefficient_column(coefs, "Std. Error"),
       df = coefficient_column(coefs, "df"), p = coefficient_column(coefs, "Pr(>|t|)"),
       is_singular = isSingular(m), varcor = varcor_rows(m), optimizer_messages = as.list(unique(optimizer)),
       control = k - 1)
}

# JSON with every number at full precision (jsonlite keeps at most 15 significant digits)
to_json <- function(x) {
  if (is.list(x)) {
    items <- vapply(x, to_json, "")
    if (is.null(names(x))) return(paste0("[", paste(items, collapse = ","), "]"))
    keys <- vapply(names(x), function(k) as.character(jsonlite::toJSON(k, auto_unbox = TRUE)), "")
    return(paste0("{", paste0(keys, ":", items, collapse = ","), "}"))
  }
  stopifnot(length(x) <= 1)
  if (length(x) == 0 || is.na(x)) return("null")
  if (is.logical(x)) return(if (x) "true" else "false")
  if (is.numeric(x)) return(if (is.finite(x)) sprintf("%.17g", x) else "null")
  as.character(jsonlite::toJSON(as.character(x), auto_unbox = TRUE))
}

args <- commandArgs(trailingOnly = TRUE)
jobs <- jsonlite::fromJSON(args[1], simplifyVector = FALSE)
results <- lapply(jobs, function(job) tryCatch(fit_job(job), error = function(e) list(error = conditionMessage(e))))
writeLines(to_json(results), args[2])
