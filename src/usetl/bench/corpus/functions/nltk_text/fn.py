"""Text preprocessing as NLP handlers do it with NLTK's data-free parts: Treebank and
regexp tokenizers, Porter, Lancaster and Snowball stemmers in three languages, n-grams and
collocations by likelihood ratio, frequency distributions, edit distance and BLEU."""

import nltk
from nltk.collocations import BigramAssocMeasures, BigramCollocationFinder
from nltk.metrics.distance import edit_distance, jaccard_distance
from nltk.stem import LancasterStemmer, PorterStemmer, SnowballStemmer
from nltk.tokenize import RegexpTokenizer, TreebankWordTokenizer
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

TEXT = ("Serverless functions start cold, then warm up. Cold starts hurt latency; warm "
        "functions respond quickly. Developers measure latency, memory and cost. The "
        "platform snapshots memory so that cold starts resume from a snapshot quickly. ")


def handler(event, context):
    text = TEXT * event["repeat"]
    words = TreebankWordTokenizer().tokenize(text)
    alpha = [w.lower() for w in RegexpTokenizer(r"[A-Za-z]+").tokenize(text)]
    porter, lancaster = PorterStemmer(), LancasterStemmer()
    sample = ["functions", "starts", "running", "quickly", "measured", "snapshots"]
    snowball = {lang: [SnowballStemmer(lang).stem(w) for w in words_]
                for lang, words_ in (("english", sample),
                                     ("german", ["Funktionen", "gestartet", "schneller"]),
                                     ("french", ["fonctions", "démarrage", "rapidement"]))}
    fd = nltk.FreqDist(alpha)
    finder = BigramCollocationFinder.from_words(alpha)
    finder.apply_freq_filter(2)
    colloc = finder.nbest(BigramAssocMeasures.likelihood_ratio, 5)
    trigrams = list(nltk.ngrams(alpha[:8], 3))
    ref = "cold starts resume from a snapshot quickly".split()
    hyp = "cold starts resume quickly from the snapshot".split()
    return {"tokens": len(words), "first": words[:12],
            "porter": [porter.stem(w) for w in sample],
            "lancaster": [lancaster.stem(w) for w in sample], "snowball": snowball,
            "common": fd.most_common(5), "hapaxes": sorted(fd.hapaxes())[:5],
            "collocations": [list(c) for c in colloc], "trigrams": [list(t) for t in trigrams],
            "edit": edit_distance("latency", "lately"),
            "jaccard": round(jaccard_distance(set(ref), set(hyp)), 4),
            "bleu": round(sentence_bleu([ref], hyp,
                                        smoothing_function=SmoothingFunction().method1), 4)}
