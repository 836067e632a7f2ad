// MathJax 3 for the pages, the docstrings (pymdownx.arithmatex, generic mode: spans and divs of class
// "arithmatex" holding \(...\) and \[...\]) and the gallery's notebooks (nbconvert leaves $...$ and
// $$...$$ in the markdown cells, class "jp-RenderedMarkdown"). Nothing else on a page is typeset.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|jp-RenderedMarkdown",
  },
};

document$.subscribe(() => {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
